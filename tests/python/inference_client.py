"""A stock Python gRPC client (grpcio, grpcio-health-checking) of `coordinator serve`.

The stubs are generated from proto/inference.proto with grpcio-tools at start, as any client
would do.

  inference_client.py check --addr HOST:PORT --token T --same A B --different C D --query Q
      Health (no token), Info, Embed, Compare and Search with the token, and a wrong token and
      none; prints one JSON object of what the server answered.
  inference_client.py load --addr HOST:PORT --token T --image X.png --concurrency 1 8 64 \
      --requests 2000
      Compare requests (the image against itself, as PNG bytes) from N concurrent clients on one
      channel; prints one JSON object per concurrency: requests/s and latency percentiles.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def stubs():
    """Generates and imports inference_pb2 and inference_pb2_grpc."""
    out = tempfile.mkdtemp(prefix="inference-stubs-")
    status = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO_DIR, "inference.proto"),
    ])
    if status != 0:
        raise SystemExit(f"protoc failed with {status}")
    sys.path.insert(0, out)
    import inference_pb2
    import inference_pb2_grpc
    return inference_pb2, inference_pb2_grpc


def image(pb, path):
    with open(path, "rb") as f:
        return pb.Image(encoded=f.read())


def check(args):
    pb, rpc = stubs()
    channel = grpc.insecure_channel(args.addr)
    result = {}
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="siamese.inference.v1.Inference"), timeout=10)
    result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
    stub = rpc.InferenceStub(channel)
    auth = [("authorization", f"Bearer {args.token}")]
    info = stub.Info(pb.InfoRequest(), metadata=auth, timeout=10)
    result["info"] = {"channels": info.channels, "height": info.height, "width": info.width,
                      "embedding_width": info.embedding_width, "gallery_size": info.gallery_size}
    embedded = stub.Embed(pb.EmbedRequest(images=[image(pb, p) for p in args.same]),
                          metadata=auth, timeout=10)
    result["embeddings"] = [list(e.values) for e in embedded.embeddings]
    for name, (a, b) in (("same", args.same), ("different", args.different)):
        r = stub.Compare(pb.CompareRequest(a=image(pb, a), b=image(pb, b)), metadata=auth, timeout=10)
        result[name] = {"similarity": r.similarity, "same": r.same, "distance": r.distance}
    found = stub.Search(pb.SearchRequest(query=image(pb, args.query), k=3), metadata=auth, timeout=10)
    result["search"] = [m.name for m in found.matches]
    for name, metadata in (("wrong_token", [("authorization", "Bearer wrong")]), ("no_token", None)):
        try:
            stub.Info(pb.InfoRequest(), metadata=metadata, timeout=10)
            result[name] = "OK"
        except grpc.RpcError as e:
            result[name] = e.code().name
    try:
        stub.Embed(pb.EmbedRequest(images=[pb.Image(encoded=b"not an image")]), metadata=auth, timeout=10)
        result["bad_image"] = "OK"
    except grpc.RpcError as e:
        result["bad_image"] = e.code().name
        result["bad_image_message"] = e.details()
    print(json.dumps(result))


async def load_level(pb, rpc, addr, auth, request, concurrency, total):
    """`total` Compare calls from `concurrency` clients; requests/s and latency percentiles."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = rpc.InferenceStub(channel)
        await stub.Info(pb.InfoRequest(), metadata=auth)  # connected before the clock starts
        latencies, errors = [], 0
        left = total

        async def client():
            nonlocal left, errors
            while left > 0:
                left -= 1
                start = time.perf_counter()
                try:
                    await stub.Compare(request, metadata=auth, timeout=30)
                    latencies.append(time.perf_counter() - start)
                except grpc.RpcError:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()

    def pct(p):
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors,
            "seconds": seconds, "requests_per_s": len(latencies) / seconds,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99)}


def load(args):
    pb, rpc = stubs()
    auth = [("authorization", f"Bearer {args.token}")]
    img = image(pb, args.image)
    request = pb.CompareRequest(a=img, b=img)
    for c in args.concurrency:
        print(json.dumps(asyncio.run(load_level(pb, rpc, args.addr, auth, request, c, args.requests))))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check")
    c.add_argument("--addr", required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--same", nargs=2, required=True)
    c.add_argument("--different", nargs=2, required=True)
    c.add_argument("--query", required=True)
    c.set_defaults(run=check)
    l = sub.add_parser("load")
    l.add_argument("--addr", required=True)
    l.add_argument("--token", required=True)
    l.add_argument("--image", required=True)
    l.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    l.add_argument("--requests", type=int, default=2000)
    l.set_defaults(run=load)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
