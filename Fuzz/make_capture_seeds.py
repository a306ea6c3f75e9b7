#!/usr/bin/env python3
"""Writes the first seeds of the file-reader fuzzer (scripts/fuzz-captures.sh) into a directory:
small pcap and pcapng files built here, never real captures, plus labels files. Input format:
Tests/FuzzRegressionTests/CaptureFuzzInvariants.swift (byte 0 picks capture or labels).

    Fuzz/make_capture_seeds.py OUT_DIR"""
import gzip, hashlib, lzma, os, shutil, struct, subprocess, sys


def tcp_frame(flags, sport=40000, dport=443, src=(198, 18, 2, 10), dst=(203, 0, 113, 5)):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes(src), bytes(dst))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 0x50, flags, 65535, 0, 0)
    return ip + tcp


def ether(payload):
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + payload


def pcap(frames, e="<", nano=False, link=1, snap=65535, cut=0, caplen_bias=0):
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snap, link)
    for i, f in enumerate(frames):
        out += struct.pack(e + "IIII", 1700000000 + i, 123 * i, len(f) + caplen_bias, len(f) + 4) + f
    return out[:len(out) - cut] if cut else out


def option(code, value):
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((4 - len(value) % 4) % 4)


def block(kind, body):
    return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def pcapng(frames, options=b"", link=1, simple=False, two_interfaces=False):
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = struct.pack("<HHI", link, 0, 0) + (options + option(0, b"") if options else b"")
    out += block(1, idb)
    if two_interfaces:
        out += block(1, struct.pack("<HHI", 101, 0, 0) + option(9, bytes([0])) + option(0, b""))
    for i, f in enumerate(frames):
        pad = b"\0" * ((4 - len(f) % 4) % 4)
        if simple:
            out += block(3, struct.pack("<I", len(f)) + f + pad)
        else:
            iface = i % 2 if two_interfaces else 0
            ts = 1700000000_000000 + i
            out += block(6, struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f + pad)
    return out


def pcapng_sections(e=">"):
    """Two sections (the second in byte order e), interfaces of three link types with their own
    snap lengths and resolutions, every packet block type, and blocks a reader skips."""
    syn = tcp_frame(0x02)
    def blk(kind, body, order):
        body += b"\0" * ((4 - len(body) % 4) % 4)
        return struct.pack(order + "II", kind, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))
    def opt(code, value, order):
        return struct.pack(order + "HH", code, len(value)) + value + b"\0" * ((4 - len(value) % 4) % 4)
    out = b""
    for order in ("<", e):
        out += blk(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)
        out += blk(4, struct.pack(order + "HH", 1, 8) + bytes([198, 18, 2, 2]) + b"h1\0\0" + b"\0" * 4, order)
        out += blk(1, struct.pack(order + "HHI", 1, 0, 0) + opt(9, bytes([9]), order) + opt(0, b"", order), order)
        out += blk(1, struct.pack(order + "HHI", 113, 0, 40) + opt(14, struct.pack(order + "q", -5), order) + opt(0, b"", order), order)
        out += blk(1, struct.pack(order + "HHI", 101, 0, 0) + opt(9, bytes([0x80 | 16]), order) + opt(0, b"", order), order)
        ts = 1700000000_000000000
        out += blk(6, struct.pack(order + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(ether(syn)), 60) + ether(syn), order)
        sll = bytes(14) + b"\x08\x00" + syn
        out += blk(2, struct.pack(order + "HHIIII", 1, 0, 0, 7, len(sll), len(sll)) + sll, order)
        out += blk(5, struct.pack(order + "III", 2, 0, 99), order)
        out += blk(6, struct.pack(order + "IIIII", 2, 0, 1 << 16, len(syn), len(syn)) + syn, order)
        out += blk(3, struct.pack(order + "I", len(ether(syn))) + ether(syn), order)
        out += blk(0x0BAD, struct.pack(order + "I", 32473) + b"custom", order)
    return out


def compressed(data):
    """data in gzip, xz and (when the zstd tool is here) zstd."""
    forms = [gzip.compress(data, mtime=0), lzma.compress(data)]
    if shutil.which("zstd"):
        forms.append(subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout)
    return forms


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    syn, synack, rst = tcp_frame(0x02), tcp_frame(0x12, 443, 40000, (203, 0, 113, 5), (198, 18, 2, 10)), tcp_frame(0x04)
    eth = [ether(syn), ether(synack), ether(rst), b"\x01\x02\x03"]
    captures = [
        pcap(eth), pcap(eth, e=">"), pcap(eth, nano=True), pcap(eth, e=">", nano=True),
        pcap([syn, synack], link=101), pcap([syn], link=228), pcap(eth, cut=5), pcap(eth, snap=40),
        pcap(eth, caplen_bias=300000), pcap([]),
        pcapng(eth), pcapng(eth, option(9, bytes([9]))), pcapng(eth, option(9, bytes([0x80 | 20]))),
        pcapng(eth, option(14, struct.pack("<q", -1700000000))), pcapng(eth, option(9, bytes([0])) + option(14, struct.pack("<q", 5))),
        pcapng(eth, simple=True), pcapng([syn, synack, rst], link=101), pcapng(eth + [syn], two_interfaces=True),
        pcapng(eth)[:-7],
        pcapng_sections(">"), pcapng_sections("<"),
    ]
    captures += compressed(pcap(eth)) + compressed(pcapng_sections(">"))
    labels = [
        b"frame,label\n1,legit\n2,attack-synack\n3,attack-rst\n",
        b"frame,label\r\n1,legit\r\n\r\n4,attack-blind-reset\r\n2,legit",
        b"\n \n", b"frame,label\n99999999999,legit\n", b"frame,label\n+7,legit\n-1,legit\n",
    ]
    seeds = [b"\x00" + c for c in captures] + [b"\x01" + t for t in labels]
    seeds += [b"\x03" + b"1,legit\n5,attack-x\n", bytes([0x03 | (6 << 2)]) + b"12,attack-backscatter\n3,\n"]
    for s in seeds:
        with open(os.path.join(out_dir, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)
    print(f"{len(seeds)} seeds in {out_dir}")


if __name__ == "__main__":
    main()
