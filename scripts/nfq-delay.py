#!/usr/bin/env python3
"""A delay line for labs on kernels without sch_netem: every packet queued to NFQUEUE QUEUE is
accepted DELAY_MS later, in order. Raw netlink (no library): bind the queue, copy metadata only,
read each packet's id, send NF_ACCEPT when its time comes.

Usage: nfq-delay.py QUEUE DELAY_MS     (run inside the namespace whose rules queue to QUEUE)
"""
import collections
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NF_ACCEPT = 1
NLMSG_ERROR = 2


def message(kind, queue, attrs):
    # nfgenmsg: family, version, res_id (big-endian queue number)
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue)
    for t, data in attrs:
        length = 4 + len(data)
        body += struct.pack("=HH", length, t) + data + b"\0" * (-length % 4)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST, 0, 0) + body


def main():
    queue, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((0, 0))
    s.send(message(NFQNL_MSG_CONFIG, queue, [(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))]))
    s.send(message(NFQNL_MSG_CONFIG, queue, [(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))]))
    print("delay line: queue %d, %.1f ms" % (queue, delay * 1000), flush=True)
    waiting = collections.deque()
    while True:
        now = time.monotonic()
        while waiting and waiting[0][0] <= now:
            _, pid = waiting.popleft()
            s.send(message(NFQNL_MSG_VERDICT, queue, [(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))]))
        timeout = max(0.0, waiting[0][0] - now) if waiting else 1.0
        ready, _, _ = select.select([s], [], [], timeout)
        if not ready:
            continue
        data = s.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                a = off + 20
                while a + 4 <= off + length:
                    alen, atype = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if atype & 0x3FFF == NFQA_PACKET_HDR:
                        (pid,) = struct.unpack_from("!I", data, a + 4)
                        waiting.append((time.monotonic() + delay, pid))
                    a += (alen + 3) & ~3
            elif kind == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + 16)
                if err != 0:
                    print("delay line: netlink error %d" % err, file=sys.stderr, flush=True)
            off += (length + 3) & ~3


if __name__ == "__main__":
    main()
