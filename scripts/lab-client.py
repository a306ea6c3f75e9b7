#!/usr/bin/env python3
"""The labs' legitimate client: N fresh TCP connections to HOST:PORT, one after another, each an
HTTP/1.0 GET timed from connect to the response's first bytes (at most TIMEOUT s, default 3: a lost
SYN-ACK shows as the SYN retransmitted at 1 s, still inside it). Failures go to stderr.

Prints `RESULT ok n slow worst_ms median_ms`; slow = over 0.5 s (a lost first SYN-ACK costs the
client its SYN retransmission). Used by the integration tests and scripts/conntrack-lab.sh.

Usage: lab-client.py HOST PORT N [PACE_S] [TIMEOUT_S]
"""
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
ok = slow = 0
times = []
for i in range(n):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout)
        s.settimeout(timeout)
        s.sendall(b'GET / HTTP/1.0\r\n\r\n')
        if s.recv(12).startswith(b'HTTP/'):
            ok += 1
        s.close()
    except Exception as e:
        print('connection', i, 'failed:', e, file=sys.stderr)
    dt = time.monotonic() - t0
    times.append(dt)
    if dt > 0.5:
        slow += 1
    if pace > 0:
        time.sleep(pace)
times.sort()
worst = times[-1] * 1000 if times else 0.0
median = times[len(times) // 2] * 1000 if times else 0.0
print('RESULT', ok, n, slow, '%.1f' % worst, '%.2f' % median)
