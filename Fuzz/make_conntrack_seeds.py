#!/usr/bin/env python3
"""Writes ctnetlink fuzz seeds from the kernel's own messages (not the repo: scripts/fuzz.sh
conntrack merge minimises them into Fuzz/corpus-conntrack). Input format:
Tests/FuzzRegressionTests/ConntrackFuzzInvariants.swift (one receive's bytes).

    unshare -n Fuzz/make_conntrack_seeds.py OUT_DIR      (root; a fresh network namespace)

In the namespace it loads a table with a `ct` expression (so conntrack tracks its flows), makes
TCP connections on loopback over IPv4 and IPv6 (completed and closed, refused, left half-open,
one UDP exchange), and records what the kernel says about them: every NEW / UPDATE / DESTROY
event receive and the replies of a table dump per address family, each receive as one seed and
each message of it alone."""
import hashlib, os, socket, struct, subprocess, sys, time

NETLINK_NETFILTER = 12
IPCTNL_MSG_CT_GET = 1 << 8 | 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
MAX_SEED = 4096  # the fuzzer's -max_len


def write(out, blob):
    if 16 <= len(blob) <= MAX_SEED:
        with open(os.path.join(out, hashlib.sha1(blob).hexdigest()), "wb") as f:
            f.write(blob)


def messages(buf):
    off = 0
    while off + 16 <= len(buf):
        n = struct.unpack_from("=I", buf, off)[0]
        if n < 16 or off + n > len(buf):
            return
        yield buf[off:off + n]
        off += (n + 3) & ~3


def record(out, buf):
    """A receive whole (cut at a message boundary to fit) and each message alone."""
    whole = b""
    for m in messages(buf):
        write(out, m)
        if len(whole) + len(m) + 3 > MAX_SEED:
            write(out, whole)
            whole = b""
        whole += m + b"\0" * ((4 - len(m) % 4) % 4)
    write(out, whole)


def drain(sock, out, seconds):
    sock.settimeout(0.05)
    end = time.time() + seconds
    got = 0
    while time.time() < end:
        try:
            buf = sock.recv(1 << 16)
        except socket.timeout:
            continue
        record(out, buf)
        got += 1
    return got


def traffic():
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((host, 0))
        server.listen(8)
        port = server.getsockname()[1]
        # Completed, data both ways, closed with FIN.
        c = socket.create_connection((host, port))
        s, _ = server.accept()
        c.sendall(b"hello")
        s.recv(5)
        s.close()
        c.close()
        # Aborted with RST (SO_LINGER 0).
        c = socket.create_connection((host, port))
        s, _ = server.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        s.close()
        # Left open (ESTABLISHED in the dump).
        keep = socket.create_connection((host, port))
        keep_s, _ = server.accept()
        traffic.kept += [keep, keep_s]
        # Refused: nothing listens.
        closed = socket.socket(family, socket.SOCK_STREAM)
        closed.bind((host, 0))
        dead = closed.getsockname()[1]
        closed.close()
        try:
            socket.create_connection((host, dead), timeout=1)
        except OSError:
            pass
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.sendto(b"x", (host, 9))
        u.close()
        server.close()
traffic.kept = []


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "-f", "-"], check=True, input=(
        "table inet rg_seed {\n"
        "  chain out { type filter hook output priority 0; ct state new accept\n }\n"
        "}\n").encode())
    events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    events.bind((0, 0b111))  # NFNLGRP_CONNTRACK_NEW | _UPDATE | _DESTROY
    traffic()
    n = drain(events, out, 1.0)
    for family in (socket.AF_INET, socket.AF_INET6):
        dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        dump.bind((0, 0))
        dump.send(struct.pack("=IHHII", 20, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                  + struct.pack("=BBH", family, 0, 0))
        n += drain(dump, out, 0.5)
        dump.close()
    # The kept connections close now: their DESTROY events come when the entries time out,
    # FIN and RST updates at once.
    for s in traffic.kept:
        s.close()
    n += drain(events, out, 1.0)
    subprocess.run(["nft", "delete", "table", "inet", "rg_seed"], check=True)
    print(f"{n} receives, {len(os.listdir(out))} seeds in {out}")


main()
