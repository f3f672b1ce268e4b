#!/usr/bin/env python3
"""Asks a server's grpc.health.v1 service for its status, with the stock Python client (grpcio
and grpcio-health-checking), as a Kubernetes gRPC probe would; no token, no TLS.

    grpc-health.py HOST:PORT [SERVICE]

Prints the status (SERVING, NOT_SERVING, ...) and exits 0 when it is SERVING, 1 otherwise, 2
when the server did not answer within 5 seconds.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    target, service = sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else ""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as e:
            print(f"{target}: {e.code().name}: {e.details()}")
            sys.exit(2)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    sys.exit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
