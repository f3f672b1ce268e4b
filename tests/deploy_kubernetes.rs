//! Kubernetes: every overlay renders (`kubectl kustomize`) and passes `kubernetes-validate
//! --strict`, with the properties the deployment relies on; and, live, the rendered Jobs' pod
//! templates run as real pods with `podman kube play` from the image built here
//! (deploy/container/build-image.sh): the coordinator answers a stock grpc.health.v1 client,
//! the workers reach it by name from their own addresses, one worker pod is killed mid-run, the
//! coordinator pod is removed mid-run and played again, and the run still ends with its results
//! on the volume and the weights of an uninterrupted run. Needs podman, kubectl and the venv of
//! `scripts/deploy-test-setup.sh`.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::deploy::{
    RUN_FLAGS, RUN_STEPS, check_results, checkpoint_record, checkpoint_steps, model_tensors, poll,
    repo_root, require, run_ok, venv_python,
};
use integration_tests::{bin, bin_dir, run_with_limit, shared_dataset};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// `to` as a path relative to the folder `from` (kustomize refuses absolute paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().expect("canonical path");
    let to = to.canonicalize().expect("canonical path");
    let mut out = PathBuf::new();
    for _ in from
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
    {
        out.push("..");
    }
    out.join(to.strip_prefix("/").expect("absolute path"))
}

/// Renders a kustomization folder to `out`.
fn render(dir: &Path, out: &Path) {
    require("kubectl");
    let yaml = run_ok(
        Command::new("kubectl").arg("kustomize").arg(dir),
        &format!("kubectl kustomize {}", dir.display()),
        MINUTE,
    );
    std::fs::write(out, yaml).expect("write the rendered manifests");
}

fn validate(file: &Path) {
    let validator = venv_python().with_file_name("kubernetes-validate");
    run_ok(
        Command::new(validator)
            .args(["--strict", "--quiet"])
            .arg(file),
        &format!("kubernetes-validate --strict {}", file.display()),
        MINUTE,
    );
}

/// The documents of a YAML file, as JSON.
fn documents(file: &Path) -> Vec<Value> {
    let json = run_ok(
        Command::new(venv_python())
            .args([
                "-c",
                "import json, sys, yaml; \
                 json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
            ])
            .arg(file),
        "reading YAML",
        MINUTE,
    );
    serde_json::from_str(&json).expect("JSON from the YAML reader")
}

fn find<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}*"))
}

fn container(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// What both overlays must hold: the worker count in one place, the coordinator's Service,
/// probes, restart and resume, and the token read from a file, never from argv.
fn check_common(docs: &[Value], workers: u64) {
    let service = find(docs, "Service", "siamese-coordinator");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let coordinator = find(docs, "Job", "siamese-coordinator");
    assert_eq!(
        coordinator["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
    let c = container(coordinator);
    assert_eq!(c["startupProbe"]["grpc"]["port"], 50051, "{c}");
    assert_eq!(c["readinessProbe"]["grpc"]["port"], 50051, "{c}");
    assert!(c["args"].to_string().contains("--resume=auto"), "{c}");
    assert_eq!(
        env(c, "SIAMESE_WORKERS"),
        Some(workers.to_string().as_str())
    );
    let worker = find(docs, "Job", "siamese-worker");
    assert_eq!(worker["spec"]["completionMode"], "Indexed");
    assert_eq!(worker["spec"]["completions"], workers);
    assert_eq!(worker["spec"]["parallelism"], workers);
    let w = container(worker);
    assert!(
        env(w, "SIAMESE_COORDINATOR").is_some_and(|u| u.starts_with("http://siamese-coordinator")),
        "{w}"
    );
    assert!(w["resources"]["requests"]["cpu"].is_string(), "{w}");
    assert!(w["resources"]["limits"]["memory"].is_string(), "{w}");
    for c in [c, w] {
        assert!(env(c, "SIAMESE_TOKEN_FILE").is_some(), "{c}");
        assert!(env(c, "SIAMESE_TOKEN").is_none(), "{c}");
        assert!(!c["args"].to_string().contains("token"), "{c}");
    }
}

#[test]
fn every_overlay_renders_and_passes_strict_validation() {
    let k8s = repo_root().join("deploy/kubernetes");
    let dir = tempfile::tempdir().unwrap();

    let cpu = dir.path().join("cpu.yaml");
    render(&k8s.join("overlays/cpu"), &cpu);
    validate(&cpu);
    let docs = documents(&cpu);
    check_common(&docs, 4);
    let worker = container(find(&docs, "Job", "siamese-worker"));
    assert_eq!(worker["image"], "siamese-cluster:0.1.0");

    let gpu = dir.path().join("gpu.yaml");
    render(&k8s.join("overlays/gpu"), &gpu);
    validate(&gpu);
    let docs = documents(&gpu);
    check_common(&docs, 2);
    let worker = container(find(&docs, "Job", "siamese-worker"));
    assert_eq!(
        worker["resources"]["limits"]["nvidia.com/gpu"], 1,
        "{worker}"
    );
    assert_eq!(env(worker, "SIAMESE_DEVICE"), Some("cuda:0"));
    assert_eq!(worker["image"], "siamese-cluster-cuda:0.1.0");
    let coordinator = container(find(&docs, "Job", "siamese-coordinator"));
    assert_eq!(coordinator["image"], "siamese-cluster:0.1.0");
    assert_eq!(
        find(&docs, "ConfigMap", "siamese-run")["data"]["SIAMESE_AGGREGATION"],
        "nccl"
    );

    // The data-volume component on an overlay: both Jobs read the prepared volume.
    let with_data = dir.path().join("with-data");
    std::fs::create_dir(&with_data).unwrap();
    std::fs::write(
        with_data.join("kustomization.yaml"),
        format!(
            "resources: [{}]\ncomponents: [{}]\n",
            relative(&with_data, &k8s.join("overlays/cpu")).display(),
            relative(&with_data, &k8s.join("components/data-volume")).display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data.yaml");
    render(&with_data, &data);
    validate(&data);
    let docs = documents(&data);
    for job in ["siamese-coordinator", "siamese-worker"] {
        let volumes = find(&docs, "Job", job)["spec"]["template"]["spec"]["volumes"].clone();
        let data = volumes
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == "data"))
            .unwrap_or_else(|| panic!("{job} has no data volume: {volumes}"));
        assert_eq!(
            data["persistentVolumeClaim"]["claimName"], "siamese-data",
            "{data}"
        );
        assert_eq!(data["persistentVolumeClaim"]["readOnly"], true, "{data}");
        assert!(data.get("emptyDir").is_none(), "{data}");
    }

    for file in [
        "secret.example.yaml",
        "tools/data-loader.yaml",
        "tools/results-reader.yaml",
    ] {
        validate(&k8s.join(file));
    }
}

/// Podman with the settings these machines need (deploy/container/containers.conf).
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env(
        "CONTAINERS_CONF",
        repo_root().join("deploy/container/containers.conf"),
    );
    cmd
}

fn podman_ok(args: &[&str]) -> String {
    run_ok(
        podman().args(args),
        &format!("podman {}", args.join(" ")),
        2 * MINUTE,
    )
}

/// One play of the rendered manifests: its pods, volumes, secret and network are removed on
/// drop, whether the test passed or not.
struct Play {
    /// The rendered manifests and pod files, kept while the pods run.
    _dir: tempfile::TempDir,
    suffix: String,
    network: String,
    pods: Vec<(String, PathBuf)>,
    volumes: Vec<String>,
    secrets: Vec<String>,
}

impl Drop for Play {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = podman()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for (pod, _) in &self.pods {
            quiet(&["pod", "rm", "--force", "--time", "0", pod]);
        }
        for volume in &self.volumes {
            quiet(&["volume", "rm", "--force", volume]);
        }
        for secret in &self.secrets {
            quiet(&["secret", "rm", secret]);
        }
        quiet(&["network", "rm", "--force", &self.network]);
    }
}

impl Play {
    fn pod_file(&self, name: &str) -> &Path {
        &self
            .pods
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
            .1
    }

    fn play(&self, pod: &str) {
        let file = self.pod_file(pod).display().to_string();
        podman_ok(&["kube", "play", "--network", &self.network, &file]);
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        let name = format!("{name}{}", self.suffix);
        PathBuf::from(
            podman_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &name]).trim(),
        )
    }

    /// The pod's address on the play's network.
    fn address(&self, pod: &str) -> String {
        let infra = podman_ok(&["pod", "inspect", "--format", "{{.InfraContainerID}}", pod]);
        podman_ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            infra.trim(),
        ])
        .trim()
        .to_string()
    }

    /// `running`, `exited`, ... of a pod's one container, with its exit code.
    fn state(&self, pod: &str, container: &str) -> (String, i64) {
        let out = podman_ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &format!("{pod}-{container}"),
        ]);
        let mut fields = out.split_whitespace();
        let status = fields.next().unwrap_or("").to_string();
        let code = fields.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
        (status, code)
    }

    fn wait_exit(&self, pod: &str, container: &str, limit: Duration) -> i64 {
        poll(&format!("{pod} to exit"), limit, || {
            let (status, code) = self.state(pod, container);
            (status == "exited").then_some(code)
        })
    }

    fn logs(&self, pod: &str, container: &str) -> String {
        let out = run_with_limit(
            podman().args(["logs", &format!("{pod}-{container}")]),
            MINUTE,
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn healthy(&self, pod: &str) -> bool {
        let out = run_with_limit(
            Command::new(venv_python())
                .arg(repo_root().join("scripts/grpc-health.py"))
                .arg(format!("{}:50051", self.address(pod))),
            MINUTE,
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "SERVING"
    }
}

/// The test's own kustomization over the cpu overlay: its names suffixed, the dataset from a
/// prepared volume (the data-volume component), its token, three workers with one thread each,
/// and the run of RUN_FLAGS.
fn kustomization(dir: &Path, suffix: &str) -> String {
    let k8s = repo_root().join("deploy/kubernetes");
    let flag = |name: &str| {
        let i = RUN_FLAGS.iter().position(|f| *f == name).expect("flag");
        RUN_FLAGS[i + 1]
    };
    format!(
        r#"namespace: siamese
nameSuffix: {suffix}
resources:
  - {cpu}
  - data.yaml
components:
  - {data}
secretGenerator:
  - name: siamese-token
    files: [token]
configMapGenerator:
  - name: siamese-run
    behavior: merge
    literals:
      - SIAMESE_EPOCHS={epochs}
      - SIAMESE_TRAIN_SUBSET={subset}
      - SIAMESE_VAL_PAIRS={val}
      - SIAMESE_TEST_PAIRS={test}
      - SIAMESE_SEED={seed}
      - SIAMESE_CHECKPOINT_EVERY={every}
patches:
  - patch: |-
      apiVersion: batch/v1
      kind: Job
      metadata:
        name: siamese-worker
      spec:
        parallelism: 3
        template:
          spec:
            containers:
              - name: worker
                env:
                  - name: SIAMESE_COORDINATOR
                    value: http://siamese-coordinator{suffix}:50051
                  - name: SIAMESE_THREADS
                    value: "1"
replacements:
  - source:
      kind: Job
      name: siamese-worker
      fieldPath: spec.parallelism
    targets:
      - select:
          kind: Job
          name: siamese-worker
        fieldPaths:
          - spec.completions
      - select:
          kind: Job
          name: siamese-coordinator
        fieldPaths:
          - spec.template.spec.containers.[name=coordinator].env.[name=SIAMESE_WORKERS].value
"#,
        cpu = relative(dir, &k8s.join("overlays/cpu")).display(),
        data = relative(dir, &k8s.join("components/data-volume")).display(),
        epochs = flag("--epochs"),
        subset = flag("--train-subset"),
        val = flag("--val-pairs"),
        test = flag("--test-pairs"),
        seed = flag("--seed"),
        every = flag("--checkpoint-every"),
    )
}

/// Renders the test's manifests, turns the Jobs into pods and plays the Secret and volumes.
fn prepare() -> Play {
    require("podman");
    let image = run_ok(
        Command::new("bash")
            .arg(repo_root().join("deploy/container/build-image.sh"))
            .arg(bin_dir()),
        "deploy/container/build-image.sh",
        2 * MINUTE,
    );
    assert_eq!(
        image.trim(),
        format!("siamese-cluster:{}", env!("CARGO_PKG_VERSION"))
    );
    let dir = tempfile::tempdir().unwrap();
    let suffix = format!("-t{}", std::process::id());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        kustomization(dir.path(), &suffix),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("data.yaml"),
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: siamese-data\n\
         spec:\n  accessModes: [ReadOnlyMany]\n  resources:\n    requests:\n      storage: 1Gi\n",
    )
    .unwrap();
    let mut token = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
        &mut token,
    )
    .expect("16 random bytes");
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.path().join("token"), token).unwrap();
    let rendered = dir.path().join("rendered.yaml");
    render(dir.path(), &rendered);
    validate(&rendered);
    let summary = run_ok(
        Command::new(venv_python())
            .arg(repo_root().join("scripts/kube-jobs-to-pods.py"))
            .arg(&rendered)
            .arg(dir.path().join("pods")),
        "kube-jobs-to-pods.py",
        MINUTE,
    );
    let summary: Value = serde_json::from_str(&summary).expect("the summary is JSON");
    let pods = summary["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                PathBuf::from(p["file"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    let docs = documents(&rendered);
    let names = |kind: &str| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    let secrets = names("Secret");
    // Podman keeps a secret volume's files in a volume named after the secret.
    let volumes = [names("PersistentVolumeClaim"), secrets.clone()].concat();
    let play = Play {
        network: format!("siamese{suffix}"),
        suffix,
        pods,
        volumes,
        secrets,
        _dir: dir,
    };
    podman_ok(&["network", "create", &play.network]);
    let objects = summary["objects"]
        .as_str()
        .expect("objects file")
        .to_string();
    podman_ok(&["kube", "play", "--network", &play.network, &objects]);
    // The prepared dataset volume: MNIST's four files in mnist/.
    let mnist = play.volume_dir("siamese-data").join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for entry in std::fs::read_dir(shared_dataset("mnist"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(entry.path(), mnist.join(entry.file_name())).unwrap();
    }
    play
}

#[test]
fn the_jobs_pod_templates_train_as_pods_through_a_lost_worker_and_a_coordinator_restart() {
    let play = prepare();
    let coordinator = format!("siamese-coordinator{}", play.suffix);
    let worker = |i: usize| format!("siamese-worker{}-{i}", play.suffix);
    assert_eq!(play.pods.len(), 4, "{:?}", play.pods);

    play.play(&coordinator);
    poll(
        "the coordinator to serve grpc.health.v1",
        2 * MINUTE,
        || play.healthy(&coordinator).then_some(()),
    );
    for i in 0..3 {
        play.play(&worker(i));
    }
    let mut addresses: Vec<String> = (0..3).map(|i| play.address(&worker(i))).collect();
    addresses.push(play.address(&coordinator));
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        4,
        "every pod has its own address: {addresses:?}"
    );

    let runs = play.volume_dir("siamese-runs");
    let checkpoint = runs.join("checkpoint.safetensors");
    // A worker pod dies mid-run; the Job controller would start another for its index, which
    // joins the run while it goes on.
    let at = poll("the checkpoint at step 60", 3 * MINUTE, || {
        checkpoint_steps(&checkpoint).filter(|&s| s >= 60)
    });
    eprintln!("killing {} at step {at}", worker(1));
    podman_ok(&["pod", "rm", "--force", "--time", "0", &worker(1)]);
    play.play(&worker(1));
    let joined_at = poll("the replacement worker to join", 2 * MINUTE, || {
        let record = checkpoint_record(&checkpoint)?;
        record["membership"].as_array()?.iter().find_map(|e| {
            let rejoin = e["event"] == "joined" && e["rank"] == 1;
            e["step"].as_u64().filter(|&step| rejoin && step > 0)
        })
    });
    eprintln!("the replacement joined at step {joined_at}");

    // The coordinator pod is stopped (SIGTERM, as for an eviction) and removed mid-run.
    podman_ok(&["pod", "stop", "--time", "60", &coordinator]);
    let (_, code) = play.state(&coordinator, "coordinator");
    assert_eq!(
        code,
        75,
        "the stopped coordinator:\n{}",
        play.logs(&coordinator, "coordinator")
    );
    let stopped_at = checkpoint_steps(&checkpoint).expect("a checkpoint on the volume");
    assert!(
        stopped_at < RUN_STEPS,
        "the run ended before the coordinator could be stopped"
    );
    eprintln!("{coordinator} stopped at step {stopped_at}, exit status 75");
    podman_ok(&["pod", "rm", &coordinator]);

    // Played again, it resumes from the volume and its workers come back by themselves.
    play.play(&coordinator);
    poll("the restarted coordinator to serve", 2 * MINUTE, || {
        play.healthy(&coordinator).then_some(())
    });
    let code = play.wait_exit(&coordinator, "coordinator", 4 * MINUTE);
    let log = play.logs(&coordinator, "coordinator");
    assert_eq!(code, 0, "the restarted coordinator:\n{log}");
    assert!(log.contains("resum"), "it did not resume:\n{log}");
    for i in 0..3 {
        let code = play.wait_exit(&worker(i), "worker", MINUTE);
        assert_eq!(
            code,
            0,
            "{}:\n{}",
            worker(i),
            play.logs(&worker(i), "worker")
        );
    }

    let results = check_results(&runs.join("results.json"));
    eprintln!("results: {}", results["test"]);
    let membership = results["membership"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let lost: Vec<&Value> = membership.iter().filter(|e| e["event"] == "lost").collect();
    assert!(
        lost.iter().any(|e| e["rank"] == 1),
        "worker 1's loss is not in the results: {membership:?}"
    );
    // The resumed coordinator took its three workers back at the step it stopped at.
    let rejoined = membership
        .iter()
        .filter(|e| e["event"] == "joined" && e["step"].as_u64() == Some(stopped_at))
        .count();
    assert_eq!(rejoined, 3, "after the restart: {membership:?}");
    for event in &membership {
        eprintln!("membership: {event}");
    }

    // The same weights as one uninterrupted process.
    let reference = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(bin("coordinator"))
            .args(["--workers", "0", "--threads", "2", "--dataset", "mnist"])
            .args(RUN_FLAGS)
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(reference.path().join("run.json")),
        "the uninterrupted run",
        3 * MINUTE,
    );
    assert!(
        model_tensors(&checkpoint) == model_tensors(&reference.path().join("run.safetensors")),
        "the pods ended with other weights than one uninterrupted process"
    );
}
