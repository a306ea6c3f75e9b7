#!/usr/bin/env python3
"""Legitimate traffic and latency for `scripts/bench.sh inline`.

  tcp_probe.py serve PORT                   accept and close connections (the internet server)
  tcp_probe.py probe HOST PORT COUNT GAP_MS  COUNT real-kernel TCP connects, one every GAP_MS

A connect returns when the SYN-ACK arrives, so its time is one SYN -> SYN-ACK round trip through
the router: both the protected host's SYN and the server's SYN-ACK pass the queue. The probe
prints "probe ok N total M p50_us X p99_us Y max_us Z" (percentiles over successful connects).
A connect has 3 s: a SYN or SYN-ACK lost once shows as a ~1 s retransmission, not a failure.
"""
import socket
import sys
import time


def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    while True:
        c, _ = s.accept()
        c.close()


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def probe(host, port, count, gap_ms):
    times = []
    failures = 0
    for _ in range(count):
        t0 = time.perf_counter_ns()
        try:
            c = socket.create_connection((host, port), 3)
            times.append((time.perf_counter_ns() - t0) // 1000)
            c.close()
        except OSError as e:
            failures += 1
            print("probe: connect failed:", e, file=sys.stderr)
        time.sleep(gap_ms / 1000)
    times.sort()
    print(f"probe ok {len(times)} total {count} p50_us {percentile(times, 0.5)} "
          f"p99_us {percentile(times, 0.99)} max_us {times[-1] if times else 0}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
