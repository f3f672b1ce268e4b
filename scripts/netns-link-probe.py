#!/usr/bin/env python3
"""Latency and bandwidth of one TCP connection, for scripts/bench-netns.sh's cost model.

    netns-link-probe.py serve HOST PORT      # in one namespace
    netns-link-probe.py probe HOST PORT      # in another: prints three figures

The probe measures, with TCP_NODELAY on both ends: the round trip of a 1-byte message (the
median of 2,000), the time to send a 246,832-byte message (one model's f32 vector) and get a
1-byte answer (median of 200), and the bulk rate of 256 MB in 1 MB writes.
"""
import socket
import statistics
import sys
import time

MODEL_BYTES = 61_708 * 4


def recv_exactly(conn, n):
    got = 0
    while got < n:
        chunk = conn.recv(min(1 << 20, n - got))
        if not chunk:
            raise ConnectionError(f"peer closed after {got} of {n} bytes")
        got += len(chunk)


def serve(host, port):
    with socket.create_server((host, port)) as server:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                header = conn.recv(9, socket.MSG_WAITALL)
                if len(header) < 9:
                    return
                kind, size = header[:1], int.from_bytes(header[1:], "little")
                recv_exactly(conn, size)
                if kind != b"B":
                    conn.sendall(b"k")


def probe(host, port):
    for _ in range(100):
        try:
            conn = socket.create_connection((host, port), timeout=10)
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(f"netns-link-probe: cannot connect to {host}:{port}")
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(size, kind=b"P"):
        conn.sendall(kind + size.to_bytes(8, "little") + bytes(size))
        if kind != b"B":
            recv_exactly(conn, 1)

    def timed(size, n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            exchange(size)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    timed(1, 100)
    rtt = timed(1, 2000)
    message = timed(MODEL_BYTES, 200)
    total = 256 << 20
    start = time.perf_counter()
    for _ in range(total >> 20):
        exchange(1 << 20, b"B")
    exchange(1)
    bulk = total * 8 / (time.perf_counter() - start) / 1e9
    conn.close()
    print(f"round trip {rtt * 1e6:.0f} us, one {MODEL_BYTES}-byte message + answer "
          f"{message * 1e6:.0f} us, bulk {bulk:.1f} Gbit/s")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("serve", "probe"):
        sys.exit(__doc__)
    {"serve": serve, "probe": probe}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
