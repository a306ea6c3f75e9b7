#!/usr/bin/env python3
"""Saturation for `scripts/bench.sh inline`: how fast a consumer empties a full queue.

The lab's sender cannot outrun a fast consumer on this kind of machine (trafgen plus the router's
forwarding on one core), so saturation is made the other way round: the consumer is stopped
(SIGSTOP) while the flood fills its queue, then this program resumes it (SIGCONT) and times how
long the queue takes to empty. Nothing else arrives meanwhile, so every packet verdicted in that
window was waiting: the consumer ran flat out the whole time.

  drain.py PID QUEUE [CORE]   (inside the router's network namespace: /proc/net is per netns)

Prints "drain packets N seconds S utime_ticks U stime_ticks T run_ns R": ticks of
/proc/PID/stat (sampled), and the exact run time of all the consumer's threads (schedstat). With
CORE, also how that core spent the drain (/proc/stat ticks: user system softirq idle steal), to
show where wall time went that the consumer did not use.
"""
import os
import signal
import sys
import time

QUEUE_FILE = "/proc/net/netfilter/nfnetlink_queue"


def queue_row(queue):
    with open(QUEUE_FILE) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and int(fields[0]) == queue:
                return [int(x) for x in fields[:8]]
    return None


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces; fields after it start at the closing parenthesis.
        rest = f.read().rsplit(")", 1)[1].split()
    run = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            run += int(f.read().split()[0])
    return int(rest[11]), int(rest[12]), run


def core_ticks(core):
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                # user+nice, system, softirq (+irq), idle (+iowait), steal
                return [v[0] + v[1], v[2], v[5] + v[6], v[3] + v[4], v[7]]
    return [0] * 5


def main():
    pid, queue = int(sys.argv[1]), int(sys.argv[2])
    core = int(sys.argv[3]) if len(sys.argv) > 3 else None
    row = queue_row(queue)
    if row is None:
        sys.exit(f"drain: queue {queue} is not bound")
    waiting, ids = row[2], row[7]
    u0, s0, r0 = cpu(pid)
    k0 = core_ticks(core) if core is not None else None
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGCONT)
    deadline = t0 + 120
    while True:
        row = queue_row(queue)
        if row is None or row[2] == 0 or time.perf_counter() > deadline:
            break
        time.sleep(0.001)
    t1 = time.perf_counter()
    u1, s1, r1 = cpu(pid)
    if core is not None:
        k1 = core_ticks(core)
        d = [b - a for a, b in zip(k0, k1)]
        print(f"drain: core {core} ticks user {d[0]} system {d[1]} softirq {d[2]} idle {d[3]} steal {d[4]}", file=sys.stderr)
    if row is not None and row[7] != ids:
        print(f"drain: warning: {row[7] - ids} packets arrived while draining", file=sys.stderr)
    print(f"drain packets {waiting} seconds {t1 - t0:.4f} utime_ticks {u1 - u0} stime_ticks {s1 - s0} run_ns {r1 - r0}", flush=True)


if __name__ == "__main__":
    main()
