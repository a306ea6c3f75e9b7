/// The reference parser: every header decoded one field at a time, in the order the RFCs lay them
/// out, with a length check before every read. It is the oracle the SIMD fast path is tested
/// against, so it is written for clarity first; it still allocates nothing and never traps.
///
/// What counts as what follows docs/output.md's counting rules, which follow tshark: `network` is set
/// once the IP header's fixed part is there and self-consistent (tshark shows `ip.src`), `hasTCP`
/// once the 20 fixed TCP bytes are there with a data offset of at least 5 (tshark shows
/// `tcp.flags`).
public enum ScalarParser {
    /// How many IPv6 extension headers (and AH headers after IPv4) the walk follows before giving
    /// up. Real traffic carries one or two (DPDK stops at 5), but the kernel's own walk
    /// (ipv6_find_hdr) has no bound, and the rules queue a packet by flags it found there: a bound
    /// a chain could exceed inside the agent's 256-byte copy would hide a TCP header the agent
    /// had. 27 headers of the minimum 8 bytes fill the copy after IPv6's 40, so 32 ends the walk
    /// only past it; each header takes at least 8 bytes, so the walk stays bounded by the bytes.
    public static let maxExtensionHeaders = 32

    public static func parse(_ bytes: UnsafeRawBufferPointer, link: LinkType, into packet: inout ParsedPacket) {
        packet = ParsedPacket()
        guard let p = bytes.baseAddress, bytes.count > 0 else {
            packet.malformed = link.startsAtNetworkLayer ? .truncatedIP : .truncatedLink
            return
        }
        parse(p, count: bytes.count, link: link, into: &packet)
    }

    public static func parse(_ bytes: [UInt8], link: LinkType) -> ParsedPacket {
        var p = ParsedPacket()
        bytes.withUnsafeBytes { parse($0, link: link, into: &p) }
        return p
    }

    /// `packet` must be freshly reset. `count` > 0.
    @usableFromInline
    static func parse(_ p: UnsafeRawPointer, count: Int, link: LinkType, into packet: inout ParsedPacket) {
        switch link {
        case .ethernet:
            guard count >= 14 else { packet.malformed = .truncatedLink; return }
            etherType(p, count: count, typeAt: 12, into: &packet)
        case .linuxSLL:
            // 16 bytes: packet type, ARPHRD, address length, 8 address bytes, protocol.
            guard count >= 16 else { packet.malformed = .truncatedLink; return }
            etherType(p, count: count, typeAt: 14, into: &packet)
        case .linuxSLL2:
            // 20 bytes: protocol first, then reserved, ifindex, ARPHRD, packet type, address.
            guard count >= 20 else { packet.malformed = .truncatedLink; return }
            network(p, count: count, etherType: be16(p, 0), at: 20, into: &packet)
        case .raw:
            switch byte(p, 0) >> 4 {
            case 4: ipv4(p, count: count, at: 0, into: &packet)
            case 6: ipv6(p, count: count, at: 0, into: &packet)
            default: packet.malformed = .badVersion
            }
        case .ipv4:
            ipv4(p, count: count, at: 0, into: &packet)
        case .ipv6:
            ipv6(p, count: count, at: 0, into: &packet)
        case .null, .loop:
            guard count >= 4 else { packet.malformed = .truncatedLink; return }
            // DLT_NULL writes the family in the capturing host's order, DLT_LOOP in network
            // order; the values are small, so a null header is read both ways. The IPv6 values
            // differ per BSD: 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (Darwin).
            let network = be32(p, 0)
            let family = link == .null && network > 0xffff ? network.byteSwapped : network
            switch family {
            case 2: ipv4(p, count: count, at: 4, into: &packet)
            case 24, 28, 30: ipv6(p, count: count, at: 4, into: &packet)
            default: return
            }
        }
    }

    /// Ethernet-style EtherType at `typeAt`, followed by up to two VLAN tags.
    @usableFromInline
    static func etherType(_ p: UnsafeRawPointer, count: Int, typeAt: Int, into packet: inout ParsedPacket) {
        var at = typeAt
        var type = be16(p, at)
        while type == EtherType.vlan || type == EtherType.qinq || type == EtherType.qinqLegacy {
            // A third tag is not something ReflectGuard forwards: treat it as non-IP.
            guard packet.vlanTags < 2 else { return }
            guard count >= at + 6 else { packet.malformed = .truncatedLink; return }
            packet.vlanTags &+= 1
            at += 4
            type = be16(p, at)
        }
        network(p, count: count, etherType: type, at: at + 2, into: &packet)
    }

    @usableFromInline
    static func network(_ p: UnsafeRawPointer, count: Int, etherType: UInt16, at n: Int, into packet: inout ParsedPacket) {
        switch etherType {
        case EtherType.ipv4: ipv4(p, count: count, at: n, into: &packet)
        case EtherType.ipv6: ipv6(p, count: count, at: n, into: &packet)
        default: return  // ARP, LLDP, 802.3 lengths...: not IP, not malformed
        }
    }

    // MARK: IPv4 (RFC 791)

    @usableFromInline
    static func ipv4(_ p: UnsafeRawPointer, count: Int, at n: Int, into packet: inout ParsedPacket) {
        packet.networkOffset = UInt16(truncatingIfNeeded: n)
        guard count - n >= 1 else { packet.malformed = .truncatedIP; return }
        guard byte(p, n) >> 4 == 4 else { packet.malformed = .badVersion; return }
        guard count - n >= 20 else { packet.malformed = .truncatedIP; return }
        let headerLength = Int(byte(p, n) & 0x0f) * 4
        guard headerLength >= 20 else { packet.malformed = .badIHL; return }
        let totalLength = Int(be16(p, n + 2))
        guard totalLength >= headerLength else { packet.malformed = .badTotalLength; return }

        packet.network = .ipv4
        packet.ttl = byte(p, n + 8)
        packet.ipProtocol = byte(p, n + 9)
        packet.source = mappedIPv4(p, n + 12)
        packet.destination = mappedIPv4(p, n + 16)
        // Options cut by the snap length: the addresses are there (tshark counts the frame as
        // IPv4), but nothing after them can be trusted.
        guard count - n >= headerLength else { packet.malformed = .truncatedIP; return }

        let fragment = be16(p, n + 6)
        let offset = fragment & 0x1fff
        let moreFragments = fragment & 0x2000 != 0
        guard offset == 0 else { packet.isLaterFragment = true; return }

        // IP end as the header declares it; bytes past it are link padding, not TCP.
        transport(p, count: count, at: n + headerLength, ipEnd: n + totalLength,
                  firstFragment: moreFragments, protocol: packet.ipProtocol, isIPv6: false, into: &packet)
    }

    // MARK: IPv6 (RFC 8200)

    @usableFromInline
    static func ipv6(_ p: UnsafeRawPointer, count: Int, at n: Int, into packet: inout ParsedPacket) {
        packet.networkOffset = UInt16(truncatingIfNeeded: n)
        guard count - n >= 1 else { packet.malformed = .truncatedIP; return }
        guard byte(p, n) >> 4 == 6 else { packet.malformed = .badVersion; return }
        guard count - n >= 40 else { packet.malformed = .truncatedIP; return }
        packet.network = .ipv6
        packet.ipProtocol = byte(p, n + 6)
        packet.ttl = byte(p, n + 7)
        packet.source = ipv6Address(p, n + 8)
        packet.destination = ipv6Address(p, n + 24)
        packet.ipv4MappedInIPv6 = packet.source.isIPv4Mapped || packet.destination.isIPv4Mapped
        let payloadLength = Int(be16(p, n + 4))
        // Payload length 0 is a jumbogram (RFC 2675) or a lie; either way the capture is all
        // there is to go by.
        let ipEnd = payloadLength == 0 ? max(count, n + 40) : n + 40 + payloadLength
        transport(p, count: count, at: n + 40, ipEnd: ipEnd, firstFragment: false,
                  protocol: packet.ipProtocol, isIPv6: true, into: &packet)
    }

    // MARK: extension headers, then TCP

    /// Walks the extension headers from `t` (all IPv6 ones, or only AH after IPv4), then decodes
    /// TCP if that is what follows.
    @usableFromInline
    static func transport(_ p: UnsafeRawPointer, count: Int, at start: Int, ipEnd: Int, firstFragment: Bool,
                          protocol first: UInt8, isIPv6: Bool, into packet: inout ParsedPacket) {
        var t = start
        var next = first
        var walked = 0
        var fragmented = firstFragment
        while true {
            let length: Int
            if next == IPProto.ah {
                // RFC 4302 §2.2: payload length in 4-byte units, minus 2.
                guard count - t >= 2 else { return extensionCut(t + 2, ipEnd: ipEnd, into: &packet) }
                length = (Int(byte(p, t + 1)) + 2) * 4
            } else if isIPv6 && (next == IPProto.hopByHop || next == IPProto.routing
                                 || next == IPProto.destinationOptions) {
                // RFC 8200 §4.3: length in 8-byte units, not counting the first 8.
                guard count - t >= 2 else { return extensionCut(t + 2, ipEnd: ipEnd, into: &packet) }
                length = (Int(byte(p, t + 1)) + 1) * 8
            } else if isIPv6 && next == IPProto.fragment {
                length = 8
            } else {
                packet.ipProtocol = next
                packet.transportOffset = UInt16(truncatingIfNeeded: t)
                if next == IPProto.tcp {
                    tcp(p, count: count, at: t, ipEnd: ipEnd, firstFragment: fragmented, into: &packet)
                }
                return  // ESP, no-next-header, UDP, ICMP...: nothing more to read
            }
            guard walked < maxExtensionHeaders else {
                packet.ipProtocol = next
                packet.malformed = .extensionHeaderChainTooLong
                return
            }
            walked += 1
            guard t + length <= ipEnd else { packet.malformed = .badTotalLength; return }
            guard t + length <= count else { packet.malformed = .truncatedExtensionHeader; return }
            if next == IPProto.fragment {
                let field = be16(p, t + 2)
                if field & 0xfff8 != 0 {
                    packet.ipProtocol = byte(p, t)
                    packet.isLaterFragment = true
                    return
                }
                if field & 1 != 0 { fragmented = true }
            }
            next = byte(p, t)
            t += length
        }
    }

    @usableFromInline
    static func extensionCut(_ needed: Int, ipEnd: Int, into packet: inout ParsedPacket) {
        packet.malformed = needed > ipEnd ? .badTotalLength : .truncatedExtensionHeader
    }

    // MARK: TCP (RFC 9293 §3.1)

    @usableFromInline
    static func tcp(_ p: UnsafeRawPointer, count: Int, at t: Int, ipEnd: Int, firstFragment: Bool,
                    into packet: inout ParsedPacket) {
        let declared = ipEnd - t               // what the IP lengths say TCP occupies
        let captured = min(count, ipEnd) - t   // what is actually here of it
        guard declared >= 20 else {
            // A first fragment may legitimately end inside the TCP header; anything else whose
            // IP length leaves no room for it is inconsistent: the packet itself is short, not
            // the bytes at hand (`truncatedTCP`), so no copy or capture holds more of it.
            if !firstFragment { packet.malformed = .badTotalLength }
            return
        }
        guard captured >= 20 else { packet.malformed = .truncatedTCP; return }
        let dataOffset = Int(byte(p, t + 12) >> 4)
        guard dataOffset >= 5 else { packet.malformed = .badDataOffset; return }

        packet.hasTCP = true
        packet.sourcePort = be16(p, t)
        packet.destinationPort = be16(p, t + 2)
        packet.sequence = be32(p, t + 4)
        packet.acknowledgment = be32(p, t + 8)
        packet.flags = TCPFlags(rawValue: byte(p, t + 13))
        packet.window = be16(p, t + 14)

        let headerLength = dataOffset * 4
        if headerLength > 20 {
            // An option whose length runs past the header only ends the walk: tshark notes it but
            // does not call the frame malformed, and docs/output.md counts as tshark does.
            packet.optionSignature = TCPOptionWalk.signature(p + t + 20, count: min(headerLength, captured) - 20).0
        }
        if headerLength > declared {
            packet.payloadLength = 0
            if !firstFragment { packet.malformed = .badDataOffset }
        } else {
            packet.payloadLength = UInt16(truncatingIfNeeded: min(declared - headerLength, 0xffff))
            if headerLength > captured { packet.malformed = .truncatedTCPOptions }
        }
    }
}

extension LinkType {
    /// True for the link types whose bytes start with the IP header.
    @inlinable
    public var startsAtNetworkLayer: Bool {
        switch self {
        case .raw, .ipv4, .ipv6: return true
        default: return false
        }
    }
}
