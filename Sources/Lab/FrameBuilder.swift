import PacketParser

/// Up to 40 bytes of TCP options, stored inline so that building a frame allocates nothing.
///
/// Build with the chaining helpers (`TCPOptions().mss(1460).sackPermitted()…`) or take a stack's
/// own order from `TCPOptions.syn(_:)`. The builder pads to a multiple of 4 with EOL.
public struct TCPOptions: Equatable, Sendable {
    public private(set) var storage = SIMD64<UInt8>()
    public private(set) var count = 0

    public init() {}
    public static let none = TCPOptions()

    public init(bytes: [UInt8]) {
        precondition(bytes.count <= 40, "TCP options hold at most 40 bytes, got \(bytes.count)")
        for b in bytes { storage[count] = b; count += 1 }
    }

    public var bytes: [UInt8] { (0..<count).map { storage[$0] } }

    // Fixed-arity appenders: a variadic one would allocate an array per option, per frame.
    @inline(__always)
    private mutating func put(_ b: UInt8) {
        precondition(count < 40, "TCP options hold at most 40 bytes")
        storage[count] = b
        count += 1
    }
    @inline(__always)
    private mutating func put32(_ v: UInt32) {
        put(UInt8(v >> 24)); put(UInt8((v >> 16) & 0xff)); put(UInt8((v >> 8) & 0xff)); put(UInt8(v & 0xff))
    }

    public func mss(_ v: UInt16) -> TCPOptions {
        var o = self; o.put(2); o.put(4); o.put(UInt8(v >> 8)); o.put(UInt8(v & 0xff)); return o
    }
    public func sackPermitted() -> TCPOptions { var o = self; o.put(4); o.put(2); return o }
    public func windowScale(_ shift: UInt8) -> TCPOptions { var o = self; o.put(3); o.put(3); o.put(shift); return o }
    public func nop() -> TCPOptions { var o = self; o.put(1); return o }
    public func eol() -> TCPOptions { var o = self; o.put(0); return o }
    public func timestamps(_ value: UInt32, _ echo: UInt32) -> TCPOptions {
        var o = self; o.put(8); o.put(10); o.put32(value); o.put32(echo); return o
    }
    /// TCP Fast Open cookie option (RFC 7413, kind 34).
    public func fastOpen(cookie: [UInt8]) -> TCPOptions {
        var o = self
        o.put(34); o.put(UInt8(2 + cookie.count))
        for b in cookie { o.put(b) }
        return o
    }
}

/// The TCP stacks whose option layouts the lab reproduces. Orders are what the stacks send
/// (as in p0f's signatures): they differ, which is what ingress-only scoring looks at.
public enum TCPStack: UInt8, Sendable, CaseIterable {
    case linux, windows, macOS, freeBSD

    /// Initial TTL / hop limit.
    public var initialTTL: UInt8 { self == .windows ? 128 : 64 }
    public var windowScale: UInt8 {
        switch self { case .linux: 7; case .windows: 8; case .macOS: 6; case .freeBSD: 6 }
    }
    /// Window in a SYN (never scaled, RFC 7323 §2.2).
    public var synWindow: UInt16 {
        switch self { case .linux: 64240; case .windows: 64240; case .macOS: 65535; case .freeBSD: 65535 }
    }
    /// Window in a SYN-ACK.
    public var synAckWindow: UInt16 {
        switch self { case .linux: 65160; case .windows: 65535; case .macOS: 65535; case .freeBSD: 65535 }
    }
    /// Raw (unscaled) window field once established.
    public var establishedWindow: UInt16 {
        switch self { case .linux: 502; case .windows: 1026; case .macOS: 2058; case .freeBSD: 1027 }
    }
    /// Whether the stack offers timestamps in its SYN (Windows does not by default).
    public var offersTimestamps: Bool { self != .windows }
    /// Ephemeral port range of a client of this stack.
    public var ephemeralPorts: ClosedRange<UInt16> {
        switch self {
        case .linux: 32768...60999          // net.ipv4.ip_local_port_range
        case .windows, .macOS: 49152...65535 // IANA dynamic range
        case .freeBSD: 10000...65535        // net.inet.ip.portrange.first
        }
    }

    /// The options of a SYN from this stack, in its own order.
    public func synOptions(mss: UInt16, tsValue: UInt32) -> TCPOptions {
        let o = TCPOptions()
        switch self {
        case .linux:   // MSS, SACK_PERM, TS, NOP, WS
            return o.mss(mss).sackPermitted().timestamps(tsValue, 0).nop().windowScale(windowScale)
        case .windows: // MSS, NOP, WS, NOP, NOP, SACK_PERM
            return o.mss(mss).nop().windowScale(windowScale).nop().nop().sackPermitted()
        case .macOS:   // MSS, NOP, WS, NOP, NOP, TS, SACK_PERM, EOL, EOL
            return o.mss(mss).nop().windowScale(windowScale).nop().nop().timestamps(tsValue, 0)
                .sackPermitted().eol().eol()
        case .freeBSD: // MSS, NOP, WS, SACK_PERM, TS
            return o.mss(mss).nop().windowScale(windowScale).sackPermitted().timestamps(tsValue, 0)
        }
    }

    /// The options of this stack's SYN-ACK: a server echoes only what the SYN offered
    /// (RFC 7323 §2.2, RFC 2018), and always states its own MSS.
    public func synAckOptions(mss: UInt16, sack: Bool, timestamps ts: (UInt32, UInt32)?, windowScale ws: Bool) -> TCPOptions {
        var o = TCPOptions().mss(mss)
        switch self {
        case .linux, .freeBSD:
            if sack { o = ts == nil ? o.nop().nop().sackPermitted() : o.sackPermitted() }
            if let ts { o = sack ? o.timestamps(ts.0, ts.1) : o.nop().nop().timestamps(ts.0, ts.1) }
            if ws { o = o.nop().windowScale(windowScale) }
        case .windows, .macOS:
            if ws { o = o.nop().windowScale(windowScale) }
            if sack { o = o.nop().nop().sackPermitted() }
            if let ts { o = o.nop().nop().timestamps(ts.0, ts.1) }
        }
        return o
    }
}

/// 802.1Q / 802.1ad tags in front of the network header.
public enum VLANTags: Equatable, Sendable {
    case none
    /// One 802.1Q tag (TPID 0x8100).
    case dot1Q(vid: UInt16, pcp: UInt8 = 0)
    /// 802.1ad: an S-tag (TPID 0x88a8) then a C-tag (0x8100).
    case qinq(outer: UInt16, inner: UInt16)

    var byteCount: Int {
        switch self { case .none: 0; case .dot1Q: 4; case .qinq: 8 }
    }
}

/// An IPv6 extension header placed between the fixed header and TCP.
public enum IPv6ExtensionHeader: Equatable, Sendable {
    /// Hop-by-Hop Options (0) of `length` bytes (a multiple of 8, ≥ 8), filled with PadN.
    case hopByHop(length: Int)
    /// Destination Options (60), PadN-filled.
    case destinationOptions(length: Int)
    /// Routing (43), type 4 (SRH-shaped) with segments left 0 and no segments: skipped by hosts.
    case routing
    /// An atomic Fragment header (44): offset 0, no more fragments (RFC 6946).
    case fragment(identification: UInt32)

    var type: UInt8 {
        switch self { case .hopByHop: 0; case .destinationOptions: 60; case .routing: 43; case .fragment: 44 }
    }
    var byteCount: Int {
        switch self {
        case .hopByHop(let n), .destinationOptions(let n):
            precondition(n >= 8 && n % 8 == 0 && n <= 2048, "extension header length \(n) must be a multiple of 8")
            return n
        case .routing, .fragment: return 8
        }
    }
}

/// What the TCP segment carries. `.pattern` takes bytes from a fixed deterministic block, so
/// generating millions of data segments costs no random numbers and no allocation.
public enum Payload: Equatable, Sendable {
    case none
    case bytes([UInt8])
    case pattern(length: Int, offset: Int)

    public var count: Int {
        switch self { case .none: 0; case .bytes(let b): b.count; case .pattern(let n, _): n }
    }
}

/// Every field of one Ethernet / IP / TCP frame. IPv4-mapped addresses make an IPv4 packet,
/// others an IPv6 one; both addresses must be of the same family.
public struct FrameSpec: Equatable, Sendable {
    public var sourceMAC: UInt64 = 0x02_00_00_00_01_01
    public var destinationMAC: UInt64 = 0x02_00_00_00_01_fe
    public var vlan: VLANTags = .none

    public var source: IPAddress
    public var destination: IPAddress
    /// IPv4 TTL or IPv6 hop limit.
    public var ttl: UInt8 = 64
    public var ipID: UInt16 = 0
    public var dontFragment = true
    /// IPv4 TOS or IPv6 traffic class.
    public var tos: UInt8 = 0
    public var flowLabel: UInt32 = 0
    /// IPv4 options, padded with EOL to a multiple of 4 (at most 40 bytes).
    public var ipv4Options: [UInt8] = []
    public var ipv6Extensions: [IPv6ExtensionHeader] = []

    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequence: UInt32 = 0
    public var acknowledgment: UInt32 = 0
    public var flags: TCPFlags = .syn
    public var window: UInt16 = 64240
    public var urgentPointer: UInt16 = 0
    public var options: TCPOptions = .none
    public var payload: Payload = .none

    public init(source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                flags: TCPFlags = .syn, sequence: UInt32 = 0, acknowledgment: UInt32 = 0) {
        precondition(FrameSpec.isV4(source) == FrameSpec.isV4(destination), "mixed address families")
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.flags = flags
        self.sequence = sequence
        self.acknowledgment = acknowledgment
    }

    public var isIPv4: Bool { FrameSpec.isV4(source) }

    /// `IPAddress.isIPv4Mapped` as two word compares the optimizer can inline here (the
    /// generator asks it several times per frame).
    @inline(__always)
    static func isV4(_ a: IPAddress) -> Bool {
        let w = unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self)
        return w[0] == 0 && UInt64(bigEndian: w[1]) >> 32 == 0xffff
    }
}

/// Builds Ethernet (or raw IP, as NFQUEUE hands packets over) frames from a `FrameSpec`, with
/// correct IPv4 header and TCP checksums. Pure Swift and allocation-free when writing into a
/// reused buffer; tests of every target may use it.
public enum FrameBuilder {
    /// Builds the frame into `out`, growing it if needed (its capacity is reused), and returns
    /// the frame's length: the frame is `out[0..<length]`. `link` is `.ethernet` or a raw-IP type
    /// (`.raw`, `.ipv4`, `.ipv6`).
    @discardableResult
    public static func build(_ spec: FrameSpec, link: LinkType = .ethernet, into out: inout [UInt8]) -> Int {
        let l2: Int
        switch link {
        case .ethernet: l2 = 14 + spec.vlan.byteCount
        case .raw, .ipv4, .ipv6: l2 = 0
        default: preconditionFailure("FrameBuilder writes Ethernet or raw IP, not \(link)")
        }
        let v4 = spec.isIPv4
        let ipOptLen = v4 ? (spec.ipv4Options.count + 3) & ~3 : 0
        precondition(ipOptLen <= 40, "IPv4 options hold at most 40 bytes")
        var extLen = 0
        if !v4 { for e in spec.ipv6Extensions { extLen += e.byteCount } }
        let ipHeaderLen = v4 ? 20 + ipOptLen : 40 + extLen
        let tcpOptLen = (spec.options.count + 3) & ~3
        let tcpLen = 20 + tcpOptLen
        let payloadLen = spec.payload.count
        let total = l2 + ipHeaderLen + tcpLen + payloadLen
        if out.count < total { out.append(contentsOf: repeatElement(0, count: total - out.count)) }

        out.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress!
            func put16(_ off: Int, _ v: UInt16) { p.storeBytes(of: v.bigEndian, toByteOffset: off, as: UInt16.self) }
            func put32(_ off: Int, _ v: UInt32) { p.storeBytes(of: v.bigEndian, toByteOffset: off, as: UInt32.self) }
            func putMAC(_ off: Int, _ m: UInt64) {
                for i in 0..<6 { p.storeBytes(of: UInt8(truncatingIfNeeded: m >> (40 - 8 * UInt64(i))), toByteOffset: off + i, as: UInt8.self) }
            }
            func putAddress(_ off: Int, _ a: IPAddress) {
                if v4 {
                    for i in 0..<4 { p.storeBytes(of: a.bytes[12 + i], toByteOffset: off + i, as: UInt8.self) }
                } else {
                    p.storeBytes(of: a.bytes, toByteOffset: off, as: SIMD16<UInt8>.self)
                }
            }

            // MARK: link layer
            if l2 > 0 {
                putMAC(0, spec.destinationMAC)
                putMAC(6, spec.sourceMAC)
                var off = 12
                switch spec.vlan {
                case .none: break
                case .dot1Q(let vid, let pcp):
                    put16(off, 0x8100); put16(off + 2, UInt16(pcp & 7) << 13 | (vid & 0x0fff)); off += 4
                case .qinq(let outer, let inner):
                    put16(off, 0x88a8); put16(off + 2, outer & 0x0fff)
                    put16(off + 4, 0x8100); put16(off + 6, inner & 0x0fff); off += 8
                }
                put16(off, v4 ? 0x0800 : 0x86dd)
            }

            // MARK: network layer
            let ip = l2
            let tcp = l2 + ipHeaderLen
            if v4 {
                p.storeBytes(of: UInt8(0x40 | (ipHeaderLen / 4)), toByteOffset: ip, as: UInt8.self)
                p.storeBytes(of: spec.tos, toByteOffset: ip + 1, as: UInt8.self)
                put16(ip + 2, UInt16(ipHeaderLen + tcpLen + payloadLen))
                put16(ip + 4, spec.ipID)
                put16(ip + 6, spec.dontFragment ? 0x4000 : 0)
                p.storeBytes(of: spec.ttl, toByteOffset: ip + 8, as: UInt8.self)
                p.storeBytes(of: UInt8(6), toByteOffset: ip + 9, as: UInt8.self)
                put16(ip + 10, 0)
                putAddress(ip + 12, spec.source)
                putAddress(ip + 16, spec.destination)
                for i in 0..<ipOptLen {
                    let b: UInt8 = i < spec.ipv4Options.count ? spec.ipv4Options[i] : 0
                    p.storeBytes(of: b, toByteOffset: ip + 20 + i, as: UInt8.self)
                }
                let sum = Checksum.fold(Checksum.add(UnsafeRawBufferPointer(start: p + ip, count: ipHeaderLen), 0))
                put16(ip + 10, ~sum)
            } else {
                put32(ip, 0x6000_0000 | UInt32(spec.tos) << 20 | (spec.flowLabel & 0xfffff))
                put16(ip + 4, UInt16(extLen + tcpLen + payloadLen))
                p.storeBytes(of: spec.ipv6Extensions.first?.type ?? 6, toByteOffset: ip + 6, as: UInt8.self)
                p.storeBytes(of: spec.ttl, toByteOffset: ip + 7, as: UInt8.self)
                putAddress(ip + 8, spec.source)
                putAddress(ip + 24, spec.destination)
                var off = ip + 40
                for (i, e) in spec.ipv6Extensions.enumerated() {
                    let next: UInt8 = i + 1 < spec.ipv6Extensions.count ? spec.ipv6Extensions[i + 1].type : 6
                    let n = e.byteCount
                    for j in 0..<n { p.storeBytes(of: UInt8(0), toByteOffset: off + j, as: UInt8.self) }
                    p.storeBytes(of: next, toByteOffset: off, as: UInt8.self)
                    switch e {
                    case .hopByHop, .destinationOptions:
                        p.storeBytes(of: UInt8(n / 8 - 1), toByteOffset: off + 1, as: UInt8.self)
                        // PadN options fill the rest (RFC 8200 §4.2), each at most 2 + 255 bytes;
                        // a remainder below 2 bytes goes to Pad1 (the zeros already written).
                        var at = off + 2
                        while off + n - at >= 2 {
                            var len = min(off + n - at - 2, 255)
                            if off + n - at - 2 - len == 1 { len -= 1 }
                            p.storeBytes(of: UInt8(1), toByteOffset: at, as: UInt8.self)
                            p.storeBytes(of: UInt8(len), toByteOffset: at + 1, as: UInt8.self)
                            at += 2 + len
                        }
                    case .routing:
                        p.storeBytes(of: UInt8(0), toByteOffset: off + 1, as: UInt8.self)
                        p.storeBytes(of: UInt8(4), toByteOffset: off + 2, as: UInt8.self)
                    case .fragment(let id):
                        put32(off + 4, id)
                    }
                    off += n
                }
            }

            // MARK: transport layer
            put16(tcp, spec.sourcePort)
            put16(tcp + 2, spec.destinationPort)
            put32(tcp + 4, spec.sequence)
            put32(tcp + 8, spec.acknowledgment)
            p.storeBytes(of: UInt8(tcpLen / 4) << 4, toByteOffset: tcp + 12, as: UInt8.self)
            p.storeBytes(of: spec.flags.rawValue, toByteOffset: tcp + 13, as: UInt8.self)
            put16(tcp + 14, spec.window)
            put16(tcp + 16, 0)
            put16(tcp + 18, spec.urgentPointer)
            for i in 0..<tcpOptLen {
                p.storeBytes(of: i < spec.options.count ? spec.options.storage[i] : 0, toByteOffset: tcp + 20 + i, as: UInt8.self)
            }
            let data = tcp + tcpLen
            switch spec.payload {
            case .none: break
            case .bytes(let b):
                b.withUnsafeBytes { (p + data).copyMemory(from: $0.baseAddress!, byteCount: b.count) }
            case .pattern(let n, let offset):
                PatternBlock.copy(to: p + data, count: n, offset: offset)
            }

            // Pseudo-header (RFC 9293 §3.1; RFC 8200 §8.1: upper-layer length, next header 6).
            var sum: UInt64 = 0
            if v4 {
                sum = Checksum.add(UnsafeRawBufferPointer(start: p + ip + 12, count: 8), sum)
            } else {
                sum = Checksum.add(UnsafeRawBufferPointer(start: p + ip + 8, count: 32), sum)
            }
            let upper = UInt32(tcpLen + payloadLen)
            sum = Checksum.addWord(UInt16(truncatingIfNeeded: upper >> 16), sum)
            sum = Checksum.addWord(UInt16(truncatingIfNeeded: upper), sum)
            sum = Checksum.addWord(6, sum)
            sum = Checksum.add(UnsafeRawBufferPointer(start: p + tcp, count: tcpLen + payloadLen), sum)
            put16(tcp + 16, ~Checksum.fold(sum))
        }
        return total
    }

    /// Convenience for tests: the frame as a new array.
    public static func frame(_ spec: FrameSpec, link: LinkType = .ethernet) -> [UInt8] {
        var out: [UInt8] = []
        let n = build(spec, link: link, into: &out)
        return Array(out[0..<n])
    }
}

/// The Internet checksum (RFC 1071), summed as big-endian 16-bit words.
public enum Checksum {
    @inline(__always)
    static func addWord(_ w: UInt16, _ sum: UInt64) -> UInt64 { sum &+ UInt64(w) }

    /// Adds the bytes as big-endian words; an odd last byte is padded with zero.
    static func add(_ bytes: UnsafeRawBufferPointer, _ sum: UInt64) -> UInt64 {
        var s = sum
        var i = 0
        let n = bytes.count
        // 4 bytes at a time: big-endian 32-bit words summed in 64 bits fold to the same 16-bit
        // one's-complement sum (RFC 1071 §2(B): deferred carries).
        while i + 4 <= n {
            s &+= UInt64(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            i += 4
        }
        while i + 2 <= n {
            s &+= UInt64(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]))
            i += 2
        }
        if i < n { s &+= UInt64(bytes[i]) << 8 }
        return s
    }

    static func fold(_ sum: UInt64) -> UInt16 {
        var s = sum
        while s >> 16 != 0 { s = (s & 0xffff) &+ (s >> 16) }
        return UInt16(s)
    }

    /// The one's-complement sum of `bytes` (a valid header including its checksum sums to 0xffff).
    public static func sum(_ bytes: UnsafeRawBufferPointer) -> UInt16 { fold(add(bytes, 0)) }
}

/// 64 KiB of fixed pseudo-random bytes that payloads are cut from.
enum PatternBlock {
    static let size = 1 << 16
    static let bytes: [UInt8] = {
        var r = LabRandom(seed: 0x7061_796c_6f61_64)
        return (0..<(size + 2048)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
    }()

    static func copy(to dst: UnsafeMutableRawPointer, count: Int, offset: Int) {
        precondition(count <= 2048 + size / 2, "pattern payloads are limited to \(2048 + size / 2) bytes")
        let start = offset & (size / 2 - 1)
        bytes.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress! + start, byteCount: count) }
    }
}
