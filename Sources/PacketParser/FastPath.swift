#if canImport(_Builtin_intrinsics.intel)
import _Builtin_intrinsics.intel
#endif

/// The SIMD-assisted fast path: recognises the packets that make up nearly all traffic (IPv4 with
/// a 20-byte header and no fragmentation, or IPv6 with TCP as next header, TCP with a sane data
/// offset and whole options) with one 16-byte load, one AND, one byte-wise compare and one
/// movemask, then decodes them without further branching on header kinds. Anything else returns
/// false and goes to `ScalarParser`, which then decides alone. Its results equal the scalar
/// parser's on every input (the tests hold it to that, frame by frame).
///
/// The compare covers the EtherType (where the link has one), the version/IHL byte, the
/// fragment field and the protocol together; a scalar parser spends a branch on each.
@usableFromInline
enum FastPath {
    /// Decodes `p[0..<count]` into the freshly reset `packet` if it is a common case.
    @usableFromInline @inline(never)
    static func parse(_ p: UnsafeRawPointer, count: Int, link: LinkType, into packet: inout ParsedPacket) -> Bool {
        parse(p, count: count, link: link, into: &packet, SIMDClassifier.self)
    }

    /// The same fast path with the header checks done one byte at a time: only for the benchmark,
    /// which keeps the SIMD classification honest by racing it against this.
    @usableFromInline @inline(never)
    static func parseWithoutSIMD(_ p: UnsafeRawPointer, count: Int, link: LinkType,
                                 into packet: inout ParsedPacket) -> Bool {
        parse(p, count: count, link: link, into: &packet, ByteClassifier.self)
    }

    @inline(__always)
    static func parse<C: Classifier>(_ p: UnsafeRawPointer, count: Int, link: LinkType,
                                     into packet: inout ParsedPacket, _ c: C.Type) -> Bool {
        switch link {
        case .ethernet:
            guard count >= 14 + 40 else { return false }
            var typeAt = 12
            var tags: UInt8 = 0
            // Up to two VLAN tags, as the scalar parser allows; their TPIDs are read as one
            // 16-bit word each (a vector would be wider than the question).
            while tags < 2 {
                let type = be16(p, typeAt)
                guard type == EtherType.vlan || type == EtherType.qinq || type == EtherType.qinqLegacy else { break }
                tags &+= 1
                typeAt &+= 4
            }
            packet.vlanTags = tags
            return typed(p, count: count, typeAt: typeAt, into: &packet, c)
        case .linuxSLL:
            guard count >= 16 + 40 else { return false }
            return typed(p, count: count, typeAt: 14, into: &packet, c)
        case .linuxSLL2:
            guard count >= 20 + 40 else { return false }
            return typed(p, count: count, typeAt: 0, networkAt: 20, into: &packet, c)
        case .raw, .ipv4, .ipv6:
            guard count >= 40 else { return false }
            if link != .ipv6 && C.bareIPv4TCP(p, 0) { return ipv4(p, count: count, at: 0, into: &packet, c) }
            if link != .ipv4 && C.bareIPv6TCP(p, 0) { return ipv6(p, count: count, at: 0, into: &packet, c) }
            return false
        case .null, .loop:
            return false   // rare on the hot paths; the scalar parser reads them
        }
    }

    /// The link hands over an EtherType at `typeAt` and the IP header right after it (or at
    /// `networkAt`, for SLL2 whose protocol field comes first): one vector loaded at the
    /// EtherType classifies both.
    @usableFromInline @inline(__always)
    static func typed<C: Classifier>(_ p: UnsafeRawPointer, count: Int, typeAt: Int, networkAt: Int? = nil,
                                     into packet: inout ParsedPacket, _ c: C.Type) -> Bool {
        let n = networkAt ?? typeAt &+ 2
        guard count >= n &+ 40 else { return false }
        if networkAt != nil {
            switch be16(p, typeAt) {
            case EtherType.ipv4 where C.bareIPv4TCP(p, n): return ipv4(p, count: count, at: n, into: &packet, c)
            case EtherType.ipv6 where C.bareIPv6TCP(p, n): return ipv6(p, count: count, at: n, into: &packet, c)
            default: return false
            }
        }
        if C.typedIPv4TCP(p, typeAt) { return ipv4(p, count: count, at: n, into: &packet, c) }
        if C.typedIPv6TCP(p, typeAt) { return ipv6(p, count: count, at: n, into: &packet, c) }
        return false
    }

    /// IPv4 already known to be version 4, IHL 5, not a fragment, protocol TCP; `count ≥ n + 40`.
    @usableFromInline @inline(__always)
    static func ipv4<C: Classifier>(_ p: UnsafeRawPointer, count: Int, at n: Int, into packet: inout ParsedPacket,
                                    _ c: C.Type) -> Bool {
        let totalLength = Int(be16(p, n &+ 2))
        guard totalLength >= 40 else { return false }
        guard tcp(p, count: count, at: n &+ 20, ipEnd: n &+ totalLength, into: &packet, c) else { return false }
        packet.network = .ipv4
        packet.ttl = byte(p, n &+ 8)
        packet.source = mappedIPv4(p, n &+ 12)
        packet.destination = mappedIPv4(p, n &+ 16)
        packet.networkOffset = UInt16(truncatingIfNeeded: n)
        return true
    }

    /// IPv6 already known to be version 6 with next header TCP; `count ≥ n + 40`.
    @usableFromInline @inline(__always)
    static func ipv6<C: Classifier>(_ p: UnsafeRawPointer, count: Int, at n: Int, into packet: inout ParsedPacket,
                                    _ c: C.Type) -> Bool {
        let payloadLength = Int(be16(p, n &+ 4))
        guard payloadLength >= 20 else { return false }
        guard tcp(p, count: count, at: n &+ 40, ipEnd: n &+ 40 &+ payloadLength, into: &packet, c) else { return false }
        packet.network = .ipv6
        packet.ttl = byte(p, n &+ 7)
        packet.source = ipv6Address(p, n &+ 8)
        packet.destination = ipv6Address(p, n &+ 24)
        packet.ipv4MappedInIPv6 = IPAddress.lanesAreV4(packet.source.lanes) || IPAddress.lanesAreV4(packet.destination.lanes)
        packet.networkOffset = UInt16(truncatingIfNeeded: n)
        return true
    }

    /// A whole TCP header inside both the capture and the IP length, or false.
    @usableFromInline @inline(__always)
    static func tcp<C: Classifier>(_ p: UnsafeRawPointer, count: Int, at t: Int, ipEnd: Int,
                                   into packet: inout ParsedPacket, _ c: C.Type) -> Bool {
        let end = min(count, ipEnd)
        guard end &- t >= 20 else { return false }
        let headerLength = Int(byte(p, t &+ 12) >> 4) &* 4
        guard headerLength >= 20, t &+ headerLength <= end else { return false }
        if headerLength > 20 {
            guard let signature = options(p + (t &+ 20), count: headerLength &- 20, c) else { return false }
            packet.optionSignature = signature
        }
        packet.hasTCP = true
        packet.ipProtocol = IPProto.tcp
        packet.transportOffset = UInt16(truncatingIfNeeded: t)
        packet.sourcePort = be16(p, t)
        packet.destinationPort = be16(p, t &+ 2)
        packet.sequence = be32(p, t &+ 4)
        packet.acknowledgment = be32(p, t &+ 8)
        packet.flags = TCPFlags(rawValue: byte(p, t &+ 13))
        packet.window = be16(p, t &+ 14)
        packet.payloadLength = UInt16(truncatingIfNeeded: min(ipEnd &- t &- headerLength, 0xffff))
        return true
    }

    /// The two option layouts Linux puts on nearly every segment are recognised whole; the rest
    /// take the general walk. Nil when the options are not whole (the scalar path reports why).
    @usableFromInline @inline(__always)
    static func options<C: Classifier>(_ o: UnsafeRawPointer, count: Int, _ c: C.Type) -> TCPOptionSignature? {
        if count == 12 && o.loadUnaligned(as: UInt32.self) == UInt32(bigEndian: 0x0101_080a) {
            // NOP NOP TS: timestamps only, in slot 0.
            return TCPOptionSignature(rawValue: 1 << 21 | 3 << 24)
        }
        if count == 20 {
            // MSS, SACK-permitted, TS, NOP, WS: the Linux SYN and SYN-ACK.
            let tail = UInt32(bigEndian: o.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
            if C.linuxSYNOptions(o) && tail & 0xffff_ff00 == 0x0103_0300 {
                let shift = min(tail & 0xff, 14)
                let mss = UInt32(be16(o, 2))
                // Slots: MSS 1, SACK-permitted 2, TS 3, WS 2.
                let order: UInt32 = 1 | 2 << 2 | 3 << 4 | 2 << 6
                return TCPOptionSignature(rawValue: mss | (shift + 1) << 16 | 1 << 20 | 1 << 21 | 1 << 22 | order << 24)
            }
        }
        let (signature, complete) = TCPOptionWalk.signature(o, count: count)
        return complete ? signature : nil
    }
}

/// The header checks of the fast path. Two spellings of the same questions: one vector compare
/// each, or a few byte compares each; the benchmark races them.
@usableFromInline
protocol Classifier {
    /// An IPv4 header at `n`: version 4, IHL 5, no fragment bits but DF, protocol TCP.
    static func bareIPv4TCP(_ p: UnsafeRawPointer, _ n: Int) -> Bool
    /// An IPv6 header at `n` with next header TCP.
    static func bareIPv6TCP(_ p: UnsafeRawPointer, _ n: Int) -> Bool
    /// EtherType IPv4 at `at`, then what `bareIPv4TCP` checks.
    static func typedIPv4TCP(_ p: UnsafeRawPointer, _ at: Int) -> Bool
    /// EtherType IPv6 at `at`, then what `bareIPv6TCP` checks.
    static func typedIPv6TCP(_ p: UnsafeRawPointer, _ at: Int) -> Bool
    /// MSS, SACK-permitted and timestamps kinds and lengths at the start of 20 option bytes.
    static func linuxSYNOptions(_ o: UnsafeRawPointer) -> Bool
}

@usableFromInline
enum SIMDClassifier: Classifier {
    /// All 16 lanes of `(v & mask) == pattern`: pand, pcmpeqb, pmovmskb, one compare.
    @usableFromInline @inline(__always)
    static func matches(_ v: SIMD16<UInt8>, _ mask: SIMD16<UInt8>, _ pattern: SIMD16<UInt8>) -> Bool {
        // The AND is done on two 64-bit lanes: written on 16 byte lanes with a mask holding
        // values other than 0x00/0xff (0xbf, 0xf0), Swift 6.3 spilled the vector and masked those
        // lanes one at a time (seen in the release assembly); on 64-bit lanes it is one `pand`.
        let masked = unsafeBitCast(unsafeBitCast(v, to: SIMD2<UInt64>.self) & unsafeBitCast(mask, to: SIMD2<UInt64>.self),
                                   to: SIMD16<UInt8>.self)
        let equal = masked .== pattern
        #if canImport(_Builtin_intrinsics.intel)
        return _mm_movemask_epi8(unsafeBitCast(equal, to: __m128i.self)) == 0xffff  // all 16 lanes
        #else
        // Portable: a true lane is all ones, so both 64-bit halves of an all-true mask are ~0.
        let halves = unsafeBitCast(equal, to: SIMD2<UInt64>.self)
        return halves[0] & halves[1] == ~0
        #endif
    }

    @usableFromInline @inline(__always)
    static func bareIPv4TCP(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        matches(p.loadUnaligned(fromByteOffset: n, as: SIMD16<UInt8>.self), Pattern.ipv4Mask, Pattern.ipv4Bare)
    }
    @usableFromInline @inline(__always)
    static func bareIPv6TCP(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        matches(p.loadUnaligned(fromByteOffset: n, as: SIMD16<UInt8>.self), Pattern.ipv6Mask, Pattern.ipv6Bare)
    }
    @usableFromInline @inline(__always)
    static func typedIPv4TCP(_ p: UnsafeRawPointer, _ at: Int) -> Bool {
        matches(p.loadUnaligned(fromByteOffset: at, as: SIMD16<UInt8>.self), Pattern.ipv4TypedMask, Pattern.ipv4Typed)
    }
    @usableFromInline @inline(__always)
    static func typedIPv6TCP(_ p: UnsafeRawPointer, _ at: Int) -> Bool {
        matches(p.loadUnaligned(fromByteOffset: at, as: SIMD16<UInt8>.self), Pattern.ipv6TypedMask, Pattern.ipv6Typed)
    }
    @usableFromInline @inline(__always)
    static func linuxSYNOptions(_ o: UnsafeRawPointer) -> Bool {
        matches(o.loadUnaligned(as: SIMD16<UInt8>.self), Pattern.linuxSYNMask, Pattern.linuxSYN)
    }
}

@usableFromInline
enum ByteClassifier: Classifier {
    @usableFromInline @inline(__always)
    static func bareIPv4TCP(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        byte(p, n) == 0x45 && be16(p, n &+ 6) & 0xbfff == 0 && byte(p, n &+ 9) == IPProto.tcp
    }
    @usableFromInline @inline(__always)
    static func bareIPv6TCP(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        byte(p, n) & 0xf0 == 0x60 && byte(p, n &+ 6) == IPProto.tcp
    }
    @usableFromInline @inline(__always)
    static func typedIPv4TCP(_ p: UnsafeRawPointer, _ at: Int) -> Bool {
        be16(p, at) == EtherType.ipv4 && bareIPv4TCP(p, at &+ 2)
    }
    @usableFromInline @inline(__always)
    static func typedIPv6TCP(_ p: UnsafeRawPointer, _ at: Int) -> Bool {
        be16(p, at) == EtherType.ipv6 && bareIPv6TCP(p, at &+ 2)
    }
    @usableFromInline @inline(__always)
    static func linuxSYNOptions(_ o: UnsafeRawPointer) -> Bool {
        be16(o, 0) == 0x0204 && be32(o, 4) == 0x0402_080a
    }
}

/// The byte patterns the fast path compares against, element-wise (which the compiler turns into
/// constant-pool vectors; array literals would not be).
@usableFromInline
enum Pattern {
    // Bare IP header at lane 0: version/IHL, fragment field (flags except DF, offset), protocol.
    @usableFromInline static var ipv4Mask: SIMD16<UInt8> { SIMD16(0xff, 0, 0, 0, 0, 0, 0xbf, 0xff, 0, 0xff, 0, 0, 0, 0, 0, 0) }
    @usableFromInline static var ipv4Bare: SIMD16<UInt8> { SIMD16(0x45, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0) }
    // Version nibble and next header.
    @usableFromInline static var ipv6Mask: SIMD16<UInt8> { SIMD16(0xf0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0) }
    @usableFromInline static var ipv6Bare: SIMD16<UInt8> { SIMD16(0x60, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0) }
    // The same with the EtherType in lanes 0-1.
    @usableFromInline static var ipv4TypedMask: SIMD16<UInt8> { SIMD16(0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0xbf, 0xff, 0, 0xff, 0, 0, 0, 0) }
    @usableFromInline static var ipv4Typed: SIMD16<UInt8> { SIMD16(0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0) }
    @usableFromInline static var ipv6TypedMask: SIMD16<UInt8> { SIMD16(0xff, 0xff, 0xf0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0) }
    @usableFromInline static var ipv6Typed: SIMD16<UInt8> { SIMD16(0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0) }
    // MSS (kind 2 len 4), SACK-permitted (4, 2), TS (8, 10); values masked out.
    @usableFromInline static var linuxSYNMask: SIMD16<UInt8> { SIMD16(0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0) }
    @usableFromInline static var linuxSYN: SIMD16<UInt8> { SIMD16(2, 4, 0, 0, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0) }
}
