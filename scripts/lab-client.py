#!/usr/bin/env python3
"""The labs' legitimate client: N fresh TCP connections to HOST:PORT, one after another, each an
HTTP/1.0 GET timed from connect to the response's first bytes (at most TIMEOUT s, default 3: a lost
SYN-ACK shows as the SYN retransmitted at 1 s, still inside it). Failures go to stderr.

Prints `RESULT ok n slow worst_ms median_ms retransmitted`; slow = over 0.5 s (a lost first
SYN-ACK costs the client its SYN retransmission); retransmitted = connections whose SYN the kernel
sent again (TCP_INFO's total_retrans right after the handshake): the loss itself, counted, where
slow can also be a loaded machine that ran the client late. Used by the integration tests and
scripts/conntrack-lab.sh.

Usage: lab-client.py HOST PORT N [PACE_S] [TIMEOUT_S]
"""
import socket
import struct
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
ok = slow = retransmitted = 0
times = []


def total_retrans(s):
    """struct tcp_info's tcpi_total_retrans (offset 100, linux/tcp.h); None where not there."""
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    return struct.unpack_from('I', info, 100)[0] if len(info) >= 104 else None


for i in range(n):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout)
        if (total_retrans(s) or 0) > 0:
            retransmitted += 1
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
print('RESULT', ok, n, slow, '%.1f' % worst, '%.2f' % median, retransmitted)
