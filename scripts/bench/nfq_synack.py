#!/usr/bin/env python3
"""The SYN-ACK rule of symmetric mode in Python (`netfilterqueue`), the peer `scripts/bench.sh
inline` compares the agent with: remember every SYN the protected side sends (4-tuple -> ISN);
accept a SYN-ACK to a protected address only when it answers one of them (reversed 4-tuple,
ack == ISN + 1); accept everything else. One verdict per packet, as the library does it.

Usage: nfq_synack.py QUEUE PROTECTED_CIDR... (IPv4 and IPv6; IPv6 without extension headers)
Queue length and socket buffer: env RG_QUEUE_MAXLEN (default 4096, the agent's default) and
RG_RCVBUF (default RG_QUEUE_MAXLEN x 2048, as the agent sizes it).
On SIGTERM/SIGINT prints "handled N accepted A dropped D" on stdout.

The table is bounded (oldest entry evicted first) but keeps no horizon: the bench runs for
seconds, and a timer per entry would only make this peer slower.
"""
import ipaddress
import os
import signal
import sys

from netfilterqueue import NetfilterQueue

SYN, ACK = 0x02, 0x10
TABLE_LIMIT = 1 << 20


def main():
    queue = int(sys.argv[1])
    nets = [ipaddress.ip_network(a) for a in sys.argv[2:]]
    v4 = [(int(n.network_address).to_bytes(4, "big"), int(n.netmask).to_bytes(4, "big")) for n in nets if n.version == 4]
    v6 = [(int(n.network_address).to_bytes(16, "big"), int(n.netmask).to_bytes(16, "big")) for n in nets if n.version == 6]
    pending = {}
    counts = {"accepted": 0, "dropped": 0}

    def protected(addr, table):
        a = int.from_bytes(addr, "big")
        for net, mask in table:
            if a & int.from_bytes(mask, "big") == int.from_bytes(net, "big"):
                return True
        return False

    def judge(pkt):
        b = pkt.get_payload()
        version = b[0] >> 4
        if version == 4 and len(b) >= 20 and b[9] == 6:
            t = (b[0] & 15) * 4
            src, dst, table = b[12:16], b[16:20], v4
        elif version == 6 and len(b) >= 40 and b[6] == 6:
            t = 40
            src, dst, table = b[8:24], b[24:40], v6
        else:
            return True
        if len(b) < t + 14:
            return True
        flags = b[t + 13] & (SYN | ACK)
        if flags == SYN and protected(src, table):
            if len(pending) >= TABLE_LIMIT:
                del pending[next(iter(pending))]
            pending[(src, b[t:t + 2], dst, b[t + 2:t + 4])] = int.from_bytes(b[t + 4:t + 8], "big")
            return True
        if flags == SYN | ACK and protected(dst, table):
            isn = pending.get((dst, b[t + 2:t + 4], src, b[t:t + 2]))
            return isn is not None and int.from_bytes(b[t + 8:t + 12], "big") == (isn + 1) & 0xFFFFFFFF
        return True

    def on_packet(pkt):
        if judge(pkt):
            counts["accepted"] += 1
            pkt.accept()
        else:
            counts["dropped"] += 1
            pkt.drop()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    nfq = NetfilterQueue()
    # Queue length, copy range and socket buffer sized as the agent sizes its own; the library
    # asks for no FAIL_OPEN, so a full queue drops (queue_dropped counts those).
    maxlen = int(os.environ.get("RG_QUEUE_MAXLEN", "4096"))
    rcvbuf = int(os.environ.get("RG_RCVBUF", str(maxlen * 2048)))
    nfq.bind(queue, on_packet, max_len=maxlen, range=256, sock_len=rcvbuf)
    try:
        nfq.run()
    except KeyboardInterrupt:
        pass
    finally:
        nfq.unbind()
    a, d = counts["accepted"], counts["dropped"]
    print(f"handled {a + d} accepted {a} dropped {d}", flush=True)


if __name__ == "__main__":
    main()
