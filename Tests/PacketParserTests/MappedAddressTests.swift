import PacketParser
import Testing

/// An IPv6 header carrying an IPv4-mapped address (`::ffff:a.b.c.d`) stores the same 16 bytes
/// as the IPv4 header of that host: the parser marks it, on every path, so later stages can tell
/// the two apart.
@Suite struct MappedAddressTests {
    static let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 2, 2]
    /// `::fffe:c612:202`: one bit from mapped, an ordinary IPv6 address.
    static let nearMapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 198, 18, 2, 2]
    static let syn = Frame.tcp(options: Frame.linuxSYNOptions)

    /// Every parser's answer: the fast path, the fast path without SIMD, the scalar reference.
    static func parsed(_ frame: [UInt8], link: LinkType) -> [ParsedPacket] {
        var fast = ParsedPacket(), noSIMD = ParsedPacket(), scalar = ParsedPacket()
        frame.withUnsafeBytes { b in
            PacketParser.parse(b, link: link, into: &fast)
            PacketParser.parseWithoutSIMD(b, link: link, into: &noSIMD)
            ScalarParser.parse(b, link: link, into: &scalar)
        }
        return [fast, noSIMD, scalar]
    }

    static var cases: [(String, [UInt8], Bool)] {
        [
            ("mapped source", Frame.ipv6(syn, src: mapped), true),
            ("mapped destination", Frame.ipv6(syn, dst: mapped), true),
            ("both mapped", Frame.ipv6(syn, src: mapped, dst: mapped), true),
            // The scalar path (the fast path takes no extension headers).
            ("mapped behind a hop-by-hop header", Frame.ipv6(syn, dst: mapped, extensions: [Frame.ext(0)]), true),
            // Marked before the TCP header is looked for: an unreadable header must not hide it.
            ("mapped, TCP cut", Array(Frame.ipv6(syn, dst: mapped).prefix(50)), true),
            ("plain IPv6", Frame.ipv6(syn), false),
            ("one bit from mapped", Frame.ipv6(syn, src: nearMapped, dst: nearMapped), false),
            ("IPv4", Frame.ipv4(syn, src: [198, 18, 2, 2]), false),
        ]
    }

    @Test func everyParserMarksAnIPv4MappedAddressInIPv6() {
        for (name, ip, want) in Self.cases {
            let frames: [(LinkType, [UInt8])] = [(.raw, ip), (.ethernet, Frame.eth(ip, type: ip[0] >> 4 == 6 ? 0x86dd : 0x0800))]
            for (link, frame) in frames {
                let all = Self.parsed(frame, link: link)
                #expect(all.allSatisfy { $0.ipv4MappedInIPv6 == want }, "\(name) \(link): \(all.map(\.ipv4MappedInIPv6))")
                #expect(all[0] == all[2] && all[1] == all[2], "\(name) \(link): the parsers disagree")
            }
        }
    }

    /// The alias the mark exists for: without it an IPv6 packet from `::ffff:198.18.2.2` and an
    /// IPv4 one from 198.18.2.2 decode to the same addresses.
    @Test func theMarkIsAllThatTellsTheFamiliesApart() {
        let v6 = PacketParser.parse(Frame.ipv6(Self.syn, src: Self.mapped, dst: Self.mapped), link: .raw)
        let v4 = PacketParser.parse(Frame.ipv4(Self.syn, src: [198, 18, 2, 2], dst: [198, 18, 2, 2]), link: .raw)
        #expect(v6.source == v4.source && v6.destination == v4.destination)
        #expect(v6.ipv4MappedInIPv6 && !v4.ipv4MappedInIPv6)
    }
}
