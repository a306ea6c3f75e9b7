import PacketParser

/// Small builders for test frames, outermost header last: `eth(ipv4(tcp(...)))`. Lengths and
/// checksums are filled in unless a test overrides them to make a frame inconsistent.
enum Frame {
    static let v4a: [UInt8] = [198, 18, 0, 1]
    static let v4b: [UInt8] = [203, 0, 113, 7]
    static let v6a: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    static let v6b: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x07]

    /// Linux's SYN options: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    static let linuxSYNOptions: [UInt8] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 3, 3, 7]
    /// NOP, NOP, timestamps: what Linux puts on every later segment.
    static let timestampOptions: [UInt8] = [1, 1, 8, 10, 0, 0, 0x10, 1, 0, 0, 0x20, 0]

    static func tcp(sport: UInt16 = 40000, dport: UInt16 = 443, seq: UInt32 = 0x1000_0000, ack: UInt32 = 0,
                    flags: UInt8 = 0x02, window: UInt16 = 64240, options: [UInt8] = [], payload: [UInt8] = [],
                    dataOffset: UInt8? = nil) -> [UInt8] {
        var opts = options
        while opts.count % 4 != 0 { opts.append(0) }
        let offset = dataOffset ?? UInt8((20 + opts.count) / 4)
        var s: [UInt8] = []
        s += be16(sport) + be16(dport) + be32(seq) + be32(ack)
        s += [offset << 4, flags] + be16(window) + [0, 0, 0, 0]
        return s + opts + payload
    }

    /// Ports no tshark dissector claims, so the payload is shown as data.
    static func udp(sport: UInt16 = 40001, dport: UInt16 = 40002, payload: [UInt8] = [1, 2, 3, 4]) -> [UInt8] {
        be16(sport) + be16(dport) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
    }

    /// `flagsFragment` is the 16-bit flags + fragment-offset field (0x4000 = DF).
    static func ipv4(_ payload: [UInt8], proto: UInt8 = 6, src: [UInt8] = v4a, dst: [UInt8] = v4b,
                     options: [UInt8] = [], ttl: UInt8 = 64, flagsFragment: UInt16 = 0x4000,
                     ihl: UInt8? = nil, totalLength: Int? = nil, tcpChecksum: Bool = true) -> [UInt8] {
        var opts = options
        while opts.count % 4 != 0 { opts.append(0) }
        let headerLength = 20 + opts.count
        var h: [UInt8] = [0x40 | (ihl ?? UInt8(headerLength / 4)), 0]
        h += be16(UInt16(truncatingIfNeeded: totalLength ?? headerLength + payload.count))
        h += [0x12, 0x34] + be16(flagsFragment) + [ttl, proto, 0, 0] + src + dst + opts
        let sum = checksum(h)
        h[10] = UInt8(sum >> 8); h[11] = UInt8(sum & 0xff)
        var body = payload
        if tcpChecksum, flagsFragment & 0x3fff == 0, let at = checksumOffset(proto, body) {
            let pseudo = src + dst + [0, proto] + be16(UInt16(body.count))
            let c = checksum(pseudo + body)
            body[at] = UInt8(c >> 8); body[at + 1] = UInt8(c & 0xff)
        }
        return h + body
    }

    /// `extensions` are complete extension headers (built with `ext`/`fragment`/`ah`); their
    /// next-header bytes are chained here, the first one's number given in `first`.
    static func ipv6(_ payload: [UInt8], proto: UInt8 = 6, src: [UInt8] = v6a, dst: [UInt8] = v6b,
                     extensions: [(UInt8, [UInt8])] = [], hopLimit: UInt8 = 64,
                     payloadLength: Int? = nil) -> [UInt8] {
        var chain: [UInt8] = []
        for (i, e) in extensions.enumerated() {
            var header = e.1
            header[0] = i + 1 < extensions.count ? extensions[i + 1].0 : proto
            chain += header
        }
        var body = payload
        if let at = checksumOffset(proto, body) {
            let pseudo = src + dst + be32(UInt32(body.count)) + [0, 0, 0, proto]
            let c = checksum(pseudo + body)
            body[at] = UInt8(c >> 8); body[at + 1] = UInt8(c & 0xff)
        }
        let next = extensions.first?.0 ?? proto
        var h: [UInt8] = [0x60, 0, 0, 0]
        h += be16(UInt16(truncatingIfNeeded: payloadLength ?? chain.count + body.count)) + [next, hopLimit]
        return h + src + dst + chain + body
    }

    /// Hop-by-hop (0), routing (43) or destination options (60) with `units` 8-byte units after
    /// the first 8; options are PadN so tshark reads them as valid.
    static func ext(_ kind: UInt8, units: Int = 0) -> (UInt8, [UInt8]) {
        let length = (units + 1) * 8
        if kind == 43 {
            // Type 0 routing header (deprecated, still parsed), segments left 0.
            var h: [UInt8] = [0, UInt8(units), 0, 0, 0, 0, 0, 0]
            h += [UInt8](repeating: 0, count: length - 8)
            return (kind, h)
        }
        var h: [UInt8] = [0, UInt8(units), 1, UInt8(length - 4)]
        h += [UInt8](repeating: 0, count: length - 4)
        return (kind, h)
    }

    static func fragment(offset: UInt16 = 0, more: Bool = false) -> (UInt8, [UInt8]) {
        (44, [0, 0] + be16(offset << 3 | (more ? 1 : 0)) + [0, 0, 0x4a, 0x1d])
    }

    /// AH (RFC 4302) with a 12-byte ICV: 24 bytes, payload length (24 / 4) - 2 = 4.
    static func ah() -> (UInt8, [UInt8]) {
        (51, [0, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1] + [UInt8](repeating: 0xa5, count: 12))
    }

    static func ah(next: UInt8) -> [UInt8] {
        var h = ah().1
        h[0] = next
        return h
    }

    static let esp: [UInt8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1] + [UInt8](repeating: 0x5a, count: 24)

    /// Ethernet II; `tags` are (TPID, VLAN ID) pairs, outermost first.
    static func eth(_ payload: [UInt8], type: UInt16 = 0x0800, tags: [(UInt16, UInt16)] = []) -> [UInt8] {
        var f: [UInt8] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]
        for (tpid, vid) in tags { f += be16(tpid) + be16(vid) }
        return f + be16(type) + payload
    }

    static func sll(_ payload: [UInt8], type: UInt16 = 0x0800) -> [UInt8] {
        [0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 1, 0, 0] + be16(type) + payload
    }

    static func sll2(_ payload: [UInt8], type: UInt16 = 0x0800) -> [UInt8] {
        be16(type) + [0, 0] + be32(2) + [0, 1, 0, 6] + [0x02, 0, 0, 0, 0, 1, 0, 0] + payload
    }

    /// BSD null header; `family` in little-endian (the usual capturing host) or big-endian order.
    static func null(_ payload: [UInt8], family: UInt32 = 2, bigEndian: Bool = false) -> [UInt8] {
        (bigEndian ? be32(family) : be32(family.byteSwapped)) + payload
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    /// Where the TCP or UDP checksum sits, when the segment is whole enough to carry one.
    static func checksumOffset(_ proto: UInt8, _ body: [UInt8]) -> Int? {
        if proto == 6, body.count >= 20 { return 16 }
        if proto == 17, body.count >= 8 { return 6 }
        return nil
    }

    /// RFC 1071 Internet checksum.
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
