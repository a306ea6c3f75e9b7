#!/usr/bin/env python3
"""Writes fuzz seeds from real captures into a directory (not the repo: scripts/fuzz.sh merge
minimises them into Fuzz/corpus). Input format: Tests/FuzzRegressionTests/FuzzInvariants.swift.

    Fuzz/make_seeds.py [--keep-addresses] OUT_DIR CAPTURE...

Per capture: each of its first frames alone (config byte + frame), and runs of consecutive
frames as packet records with their addresses moved into the protected networks, so the engine
sees the capture's real handshakes and RSTs as protected traffic."""
import hashlib, os, struct, sys

LINKS = {1: 0, 113: 1, 276: 2, 12: 3, 14: 3, 101: 3, 228: 4, 229: 5, 0: 6, 108: 7}
MAX_FRAME = 255  # a record's length is one byte


def pcap_frames(data):
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        return None
    link = struct.unpack(e + "I", data[20:24])[0] & 0xFFFF
    off, frames = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        frames.append((link, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return frames


def pcapng_frames(data):
    off, e, links, frames = 0, "<", [], []
    while off + 12 <= len(data):
        btype = struct.unpack(e + "I", data[off:off + 4])[0]
        if btype == 0x0A0D0D0A:
            e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        blen = struct.unpack(e + "I", data[off + 4:off + 8])[0]
        body = data[off + 8:off + blen - 4]
        if btype == 1:
            links.append(struct.unpack(e + "H", body[:2])[0])
        elif btype == 6:
            iface, _, _, cap = struct.unpack(e + "IIII", body[:16])
            frames.append((links[iface], body[20:20 + cap]))
        if blen < 12:
            break
        off += blen
    return frames


def write(out, blob):
    name = hashlib.sha1(blob).hexdigest()
    with open(os.path.join(out, name), "wb") as f:
        f.write(blob)


def main():
    args = sys.argv[1:]
    # Lab captures (reflectguard lab gen) already use the protected networks: keep their addresses.
    keep = "--keep-addresses" in args
    args = [a for a in args if a != "--keep-addresses"]
    out = args[0]
    os.makedirs(out, exist_ok=True)
    for path in args[1:]:
        data = open(path, "rb").read()
        frames = pcap_frames(data)
        if frames is None:
            frames = pcapng_frames(data)
        frames = [(LINKS[l], f[:MAX_FRAME]) for l, f in frames if l in LINKS]
        for link, frame in frames[:40]:
            write(out, bytes([link]) + frame)
        # Records: consecutive frames 10 ms apart, source or destination moved into the
        # protected networks in turn, some with replies and RSTs derived.
        for start in range(0, min(len(frames), 120), 12):
            run = frames[start:start + 12]
            for config in (run[0][0], run[0][0] | 0x08, run[0][0] | 0x10 | 0x80):
                blob = bytearray([config])
                for i, (_, frame) in enumerate(run):
                    move = 0 if keep else (0x04 if i % 2 == 0 else 0x08)
                    variant = move | (0x10 if i % 3 == 0 else 0) | (0x20 if i % 5 == 4 else 0)
                    blob += bytes([len(frame), 0x41, variant]) + frame
                write(out, bytes(blob))


main()
