#!/usr/bin/env python3
"""Turns rendered Kubernetes manifests (kubectl kustomize) into files `podman kube play` runs.

Podman 4.3 plays Pods, Secrets, ConfigMaps and PersistentVolumeClaims, not Jobs or Services, so
this script plays the Job controller's part: one Pod per Job (one per index for an Indexed Job,
with the index annotation and JOB_COMPLETION_INDEX as the controller sets them), named so that
the names the manifests use resolve. What differs from Kubernetes, and why:

- A Job's pod is named after the headless Service that selects it, so the Service's name
  resolves to it (podman's DNS knows pod names); an Indexed Job's pods are `<job>-<index>`.
- restartPolicy becomes Never: whoever plays these files decides when a pod comes back, as the
  Job controller would.
- A secret volume without `optional` gets `optional: false` (podman 4.3 crashes on it unset).
- Probes are dropped (podman 4.3 has no gRPC probe); check grpc.health.v1 from outside instead.

Podman itself also ignores a claim's readOnly and a secret volume's defaultMode, and keeps a
secret volume's files in a volume named after the secret.

    kube-jobs-to-pods.py RENDERED.yaml OUT_DIR

Writes OUT_DIR/objects.yaml (Secrets and PersistentVolumeClaims: play it once) and one file per
pod (the pod and the ConfigMaps it reads), and prints a JSON summary:
{"objects": PATH, "pods": [{"name", "file", "job", "index"}]}.
"""

import copy
import json
import pathlib
import sys

import yaml


def service_names(docs):
    """(name, selector) of every Service."""
    return [
        (d["metadata"]["name"], d.get("spec", {}).get("selector") or {})
        for d in docs
        if d.get("kind") == "Service"
    ]


def selected_by(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_from_template(job, name, index):
    template = copy.deepcopy(job["spec"]["template"])
    meta = template.setdefault("metadata", {})
    meta["name"] = name
    labels = meta.setdefault("labels", {})
    labels["job-name"] = job["metadata"]["name"]
    spec = template["spec"]
    spec["restartPolicy"] = "Never"
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
        meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(index)
    for container in spec.get("containers", []):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            container.pop(probe, None)
        if index is not None:
            container.setdefault("env", []).append(
                {"name": "JOB_COMPLETION_INDEX", "value": str(index)}
            )
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            volume["secret"].setdefault("optional", False)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rendered, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    out.mkdir(parents=True, exist_ok=True)
    config_maps = [d for d in docs if d.get("kind") == "ConfigMap"]
    objects = [d for d in docs if d.get("kind") in ("Secret", "PersistentVolumeClaim")]
    objects_file = out / "objects.yaml"
    objects_file.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    services = service_names(docs)
    pods = []
    for job in (d for d in docs if d.get("kind") == "Job"):
        spec = job["spec"]
        labels = spec["template"].get("metadata", {}).get("labels", {})
        if spec.get("completionMode") == "Indexed":
            names = [(f'{job["metadata"]["name"]}-{i}', i) for i in range(spec["completions"])]
        else:
            by_service = [n for n, sel in services if selected_by(sel, labels)]
            names = [(by_service[0] if by_service else job["metadata"]["name"], None)]
        for name, index in names:
            pod = pod_from_template(job, name, index)
            path = out / f"{name}.yaml"
            path.write_text(yaml.safe_dump_all(config_maps + [pod], sort_keys=False))
            pods.append(
                {"name": name, "file": str(path), "job": job["metadata"]["name"], "index": index}
            )
    json.dump({"objects": str(objects_file), "pods": pods}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
