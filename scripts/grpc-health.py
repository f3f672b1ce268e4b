#!/usr/bin/env python3
"""Asks a server's grpc.health.v1 service for its status, with the stock Python client (grpcio
and grpcio-health-checking), as a Kubernetes gRPC probe would; no token.

    grpc-health.py [--ca CA.pem] HOST:PORT [SERVICE]

With --ca it speaks TLS, trusting the CA in CA.pem (the server's certificate must name HOST);
without, plaintext. Prints the status (SERVING, NOT_SERVING, ...) and exits 0 when it is
SERVING, 1 otherwise, 2 when the server did not answer within 5 seconds.
"""

import argparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    parser = argparse.ArgumentParser(usage=__doc__)
    parser.add_argument("--ca", help="PEM file of the CA that signed the server's certificate")
    parser.add_argument("target")
    parser.add_argument("service", nargs="?", default="")
    args = parser.parse_args()
    if args.ca:
        with open(args.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.target, credentials)
    else:
        channel = grpc.insecure_channel(args.target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=5)
        except grpc.RpcError as e:
            print(f"{args.target}: {e.code().name}: {e.details()}")
            raise SystemExit(2)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    raise SystemExit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
