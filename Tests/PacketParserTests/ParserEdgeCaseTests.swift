import PacketParser
import Testing

/// The reference parser on hand-built edge cases: what it decodes and why it calls a frame
/// malformed. Each case is also run through the fast path, which must agree exactly.
@Suite struct ParserEdgeCaseTests {
    static let syn = Frame.tcp(options: Frame.linuxSYNOptions)
    static let rst = Frame.tcp(sport: 443, dport: 40000, seq: 8, flags: 0x04, window: 0)

    struct Expect {
        var network: NetworkLayer
        var tcp: Bool
        var malformed: MalformedReason?
        var proto: UInt8? = nil
        var laterFragment = false
        var vlanTags: UInt8 = 0
    }

    /// (name, link, bytes, expectation)
    static var corpus: [(String, LinkType, [UInt8], Expect)] {
        let v4 = Frame.ipv4(syn), v6 = Frame.ipv6(syn)
        let ok4 = Expect(network: .ipv4, tcp: true, malformed: nil)
        let ok6 = Expect(network: .ipv6, tcp: true, malformed: nil)
        return [
            // every link type
            ("ethernet v4", .ethernet, Frame.eth(v4), ok4),
            ("ethernet v6", .ethernet, Frame.eth(v6, type: 0x86dd), ok6),
            ("sll v4", .linuxSLL, Frame.sll(v4), ok4),
            ("sll v6", .linuxSLL, Frame.sll(v6, type: 0x86dd), ok6),
            ("sll2 v4", .linuxSLL2, Frame.sll2(v4), ok4),
            ("sll2 v6", .linuxSLL2, Frame.sll2(v6, type: 0x86dd), ok6),
            ("raw v4", .raw, v4, ok4),
            ("raw v6", .raw, v6, ok6),
            ("raw bad version", .raw, [0x50] + v4.dropFirst(), Expect(network: .none, tcp: false, malformed: .badVersion)),
            ("linktype ipv4", .ipv4, v4, ok4),
            ("linktype ipv6", .ipv6, v6, ok6),
            ("linktype ipv4 given v6", .ipv4, v6, Expect(network: .none, tcp: false, malformed: .badVersion)),
            ("null LE v4", .null, Frame.null(v4), ok4),
            ("null BE v4", .null, Frame.null(v4, bigEndian: true), ok4),
            ("null LE 24", .null, Frame.null(v6, family: 24), ok6),
            ("null BE 28", .null, Frame.null(v6, family: 28, bigEndian: true), ok6),
            ("null LE 30", .null, Frame.null(v6, family: 30), ok6),
            ("null unknown family", .null, Frame.null(v4, family: 7), Expect(network: .none, tcp: false, malformed: nil)),
            ("loop v4", .loop, Frame.null(v4, bigEndian: true), ok4),
            ("loop v6", .loop, Frame.null(v6, family: 30, bigEndian: true), ok6),
            ("ethernet ARP", .ethernet, Frame.eth([UInt8](repeating: 0, count: 28), type: 0x0806),
             Expect(network: .none, tcp: false, malformed: nil)),
            ("ethernet cut", .ethernet, Array(Frame.eth(v4)[0..<10]), Expect(network: .none, tcp: false, malformed: .truncatedLink)),
            ("sll cut", .linuxSLL, Array(Frame.sll(v4)[0..<15]), Expect(network: .none, tcp: false, malformed: .truncatedLink)),
            ("sll2 cut", .linuxSLL2, Array(Frame.sll2(v4)[0..<19]), Expect(network: .none, tcp: false, malformed: .truncatedLink)),
            ("null cut", .null, [2, 0], Expect(network: .none, tcp: false, malformed: .truncatedLink)),
            ("empty raw", .raw, [], Expect(network: .none, tcp: false, malformed: .truncatedIP)),
            ("empty ethernet", .ethernet, [], Expect(network: .none, tcp: false, malformed: .truncatedLink)),
            // VLAN / QinQ
            ("802.1Q", .ethernet, Frame.eth(v4, tags: [(0x8100, 5)]), Expect(network: .ipv4, tcp: true, malformed: nil, vlanTags: 1)),
            ("802.1ad+Q", .ethernet, Frame.eth(v6, type: 0x86dd, tags: [(0x88a8, 5), (0x8100, 6)]),
             Expect(network: .ipv6, tcp: true, malformed: nil, vlanTags: 2)),
            ("9100+Q", .ethernet, Frame.eth(v4, tags: [(0x9100, 5), (0x8100, 6)]), Expect(network: .ipv4, tcp: true, malformed: nil, vlanTags: 2)),
            ("three tags", .ethernet, Frame.eth(v4, tags: [(0x88a8, 5), (0x8100, 6), (0x8100, 7)]),
             Expect(network: .none, tcp: false, malformed: nil, vlanTags: 2)),
            ("tag cut", .ethernet, Array(Frame.eth(v4, tags: [(0x8100, 5)])[0..<16]), Expect(network: .none, tcp: false, malformed: .truncatedLink)),
            ("sll vlan", .linuxSLL, Frame.sll([0, 5, 0x08, 0x00] + v4, type: 0x8100), Expect(network: .ipv4, tcp: true, malformed: nil, vlanTags: 1)),
            // IPv4 header
            ("ipv4 options", .raw, Frame.ipv4(syn, options: [7, 7, 4, 0, 0, 0, 0, 1]), ok4),
            ("ipv4 40 bytes options", .raw, Frame.ipv4(rst, options: [UInt8](repeating: 1, count: 40)), ok4),
            ("ihl 4", .raw, Frame.ipv4(syn, ihl: 4), Expect(network: .none, tcp: false, malformed: .badIHL)),
            ("ihl 0", .raw, Frame.ipv4(syn, ihl: 0), Expect(network: .none, tcp: false, malformed: .badIHL)),
            ("ihl beyond capture", .raw, Array(Frame.ipv4(rst, options: [UInt8](repeating: 1, count: 40))[0..<30]),
             Expect(network: .ipv4, tcp: false, malformed: .truncatedIP)),
            ("total length < ihl", .raw, Frame.ipv4(syn, totalLength: 16), Expect(network: .none, tcp: false, malformed: .badTotalLength)),
            ("total length leaves 10 TCP bytes", .raw, Frame.ipv4(syn, totalLength: 30), Expect(network: .ipv4, tcp: false, malformed: .badTotalLength)),
            ("total length beyond capture", .raw, Frame.ipv4(rst, totalLength: 1500), ok4),
            ("ipv4 short", .raw, Array(v4[0..<19]), Expect(network: .none, tcp: false, malformed: .truncatedIP)),
            ("ipv4 padding", .ethernet, Frame.eth(Frame.ipv4(rst) + [0, 0, 0, 0, 0, 0]), ok4),
            // fragments
            ("first fragment whole TCP", .raw, Frame.ipv4(syn, flagsFragment: 0x2000), ok4),
            ("first fragment 8 TCP bytes", .raw, Frame.ipv4(Array(syn[0..<8]), flagsFragment: 0x2000),
             Expect(network: .ipv4, tcp: false, malformed: nil, proto: 6)),
            ("later fragment", .raw, Frame.ipv4(syn, flagsFragment: 0x2000 | 185),
             Expect(network: .ipv4, tcp: false, malformed: nil, proto: 6, laterFragment: true)),
            ("last fragment", .raw, Frame.ipv4(syn, flagsFragment: 3), Expect(network: .ipv4, tcp: false, malformed: nil, laterFragment: true)),
            ("reserved bit", .raw, Frame.ipv4(syn, flagsFragment: 0x8000), ok4),
            // AH / ESP after IPv4
            ("ipv4 AH TCP", .raw, Frame.ipv4(Frame.ah(next: 6) + syn, proto: 51), Expect(network: .ipv4, tcp: true, malformed: nil, proto: 6)),
            ("ipv4 AH cut", .raw, Array(Frame.ipv4(Frame.ah(next: 6) + syn, proto: 51)[0..<30]),
             Expect(network: .ipv4, tcp: false, malformed: .truncatedExtensionHeader)),
            ("ipv4 ESP", .raw, Frame.ipv4(Frame.esp, proto: 50), Expect(network: .ipv4, tcp: false, malformed: nil, proto: 50)),
            ("ipv4 UDP", .raw, Frame.ipv4(Frame.udp(), proto: 17), Expect(network: .ipv4, tcp: false, malformed: nil, proto: 17)),
            // IPv6 extension headers
            ("hop-by-hop", .raw, Frame.ipv6(syn, extensions: [Frame.ext(0)]), ok6),
            ("routing", .raw, Frame.ipv6(syn, extensions: [Frame.ext(43, units: 2)]), ok6),
            ("dest options", .raw, Frame.ipv6(syn, extensions: [Frame.ext(60, units: 1)]), ok6),
            ("atomic fragment", .raw, Frame.ipv6(syn, extensions: [Frame.fragment()]), ok6),
            ("first v6 fragment", .raw, Frame.ipv6(syn, extensions: [Frame.fragment(more: true)]), ok6),
            ("first v6 fragment short", .raw, Frame.ipv6(Array(syn[0..<8]), extensions: [Frame.fragment(more: true)]),
             Expect(network: .ipv6, tcp: false, malformed: nil, proto: 6)),
            ("later v6 fragment", .raw, Frame.ipv6(syn, extensions: [Frame.fragment(offset: 100)]),
             Expect(network: .ipv6, tcp: false, malformed: nil, proto: 6, laterFragment: true)),
            ("v6 AH", .raw, Frame.ipv6(syn, extensions: [Frame.ah()]), ok6),
            ("v6 all", .raw, Frame.ipv6(syn, extensions: [Frame.ext(0), Frame.ext(60), Frame.ext(43), Frame.fragment(), Frame.ah(), Frame.ext(60)]), ok6),
            ("v6 ESP stop", .raw, Frame.ipv6(Frame.esp, proto: 50, extensions: [Frame.ext(0)]), Expect(network: .ipv6, tcp: false, malformed: nil, proto: 50)),
            ("v6 no next header", .raw, Frame.ipv6([], proto: 59), Expect(network: .ipv6, tcp: false, malformed: nil, proto: 59)),
            ("chain as long as the walk", .raw, Frame.ipv6(syn, extensions: [(UInt8, [UInt8])](repeating: Frame.ext(60), count: ScalarParser.maxExtensionHeaders)), ok6),
            ("chain one longer", .raw, Frame.ipv6(syn, extensions: [(UInt8, [UInt8])](repeating: Frame.ext(60), count: ScalarParser.maxExtensionHeaders + 1)),
             Expect(network: .ipv6, tcp: false, malformed: .extensionHeaderChainTooLong)),
            ("ext header cut", .raw, Array(Frame.ipv6(syn, extensions: [Frame.ext(0, units: 2)])[0..<50]),
             Expect(network: .ipv6, tcp: false, malformed: .truncatedExtensionHeader)),
            ("ext header beyond payload length", .raw, Frame.ipv6(syn, extensions: [Frame.ext(0, units: 2)], payloadLength: 8),
             Expect(network: .ipv6, tcp: false, malformed: .badTotalLength)),
            ("ipv6 short", .raw, Array(v6[0..<39]), Expect(network: .none, tcp: false, malformed: .truncatedIP)),
            ("ipv6 jumbo length 0", .raw, Frame.ipv6(rst, payloadLength: 0), ok6),
            // TCP
            ("data offset 4", .raw, Frame.ipv4(Frame.tcp(dataOffset: 4)), Expect(network: .ipv4, tcp: false, malformed: .badDataOffset)),
            ("data offset 0", .raw, Frame.ipv6(Frame.tcp(dataOffset: 0)), Expect(network: .ipv6, tcp: false, malformed: .badDataOffset)),
            ("data offset past IP", .raw, Frame.ipv4(Frame.tcp(dataOffset: 15)), Expect(network: .ipv4, tcp: true, malformed: .badDataOffset)),
            ("options cut", .raw, Array(v4[0..<50]), Expect(network: .ipv4, tcp: true, malformed: .truncatedTCPOptions)),
            // tshark only notes options whose length is wrong inside a whole header.
            ("option overruns header", .raw, Frame.ipv4(Frame.tcp(options: [2, 8, 5, 0xb4])), ok4),
            ("option length 0", .raw, Frame.ipv4(Frame.tcp(options: [2, 0, 5, 0xb4])), ok4),
            ("option length byte missing", .raw, Frame.ipv4(Frame.tcp(options: [1, 1, 1, 2])), ok4),
            ("tcp 19 bytes", .raw, Array(Frame.ipv4(rst)[0..<39]), Expect(network: .ipv4, tcp: false, malformed: .truncatedTCP)),
            ("TFO SYN with data", .raw, Frame.ipv4(Frame.tcp(options: [2, 4, 5, 0xb4, 34, 6, 1, 2, 3, 4], payload: [9, 9, 9])), ok4),
        ]
    }

    @Test func corpusDecodesAsExpected() {
        for (name, link, bytes, e) in Self.corpus {
            let p = ScalarParser.parse(bytes, link: link)
            #expect(p.network == e.network, "\(name): network")
            #expect(p.hasTCP == e.tcp, "\(name): hasTCP")
            #expect(p.malformed == e.malformed, "\(name): malformed \(String(describing: p.malformed))")
            if let proto = e.proto { #expect(p.ipProtocol == proto, "\(name): protocol") }
            #expect(p.isLaterFragment == e.laterFragment, "\(name): later fragment")
            #expect(p.vlanTags == e.vlanTags, "\(name): VLAN tags")
            #expect(PacketParser.parse(bytes, link: link) == p, "\(name): fast path differs")
        }
    }

    @Test func decodesTheFields() {
        let frame = Frame.eth(Frame.ipv4(Frame.tcp(sport: 40000, dport: 443, seq: 0x01020304, ack: 0x0a0b0c0d,
                                                   flags: 0x12, window: 29200, options: Frame.linuxSYNOptions,
                                                   payload: [1, 2, 3]), ttl: 57),
                              tags: [(0x8100, 9)])
        for p in [ScalarParser.parse(frame, link: .ethernet), PacketParser.parse(frame, link: .ethernet)] {
            #expect(p.source == IPAddress("198.18.0.1"))
            #expect(p.destination == IPAddress("203.0.113.7"))
            #expect(p.sourcePort == 40000 && p.destinationPort == 443)
            #expect(p.sequence == 0x01020304 && p.acknowledgment == 0x0a0b0c0d)
            #expect(p.flags.isSYNACK && !p.flags.isSYN)
            #expect(p.window == 29200 && p.ttl == 57)
            #expect(p.payloadLength == 3)
            #expect(p.networkOffset == 18 && p.transportOffset == 38)
            let s = p.optionSignature
            #expect(s.hasMSS && s.mss == 1460 && s.windowScale == 7 && s.sackPermitted && s.timestamps)
            // MSS, SACK-permitted, timestamps, window scale: 1, 2, 3, 2 from the low slot up.
            #expect(s.order == 1 | 2 << 2 | 3 << 4 | 2 << 6)
        }
        let v6 = Frame.ipv6(Frame.tcp(flags: 0x10, options: Frame.timestampOptions), extensions: [Frame.ext(0)])
        for p in [ScalarParser.parse(v6, link: .raw), PacketParser.parse(v6, link: .raw)] {
            #expect(p.source == IPAddress("2001:db8::1") && p.destination == IPAddress("2001:db8::a07"))
            #expect(p.transportOffset == 48)
            #expect(p.optionSignature == TCPOptionSignature(rawValue: 1 << 21 | 3 << 24))
        }
    }

    @Test func windowScaleAboveFourteenIsFourteen() {
        let p = ScalarParser.parse(Frame.ipv4(Frame.tcp(options: [3, 3, 200, 0])), link: .raw)
        #expect(p.optionSignature.windowScale == 14)
    }

    /// A full SYN cut at every byte: never a crash, and the reason follows where the cut falls.
    @Test func truncatedAtEveryOffset() {
        let full = Frame.eth(Frame.ipv4(Self.syn, options: [1, 1, 1, 0]))   // IP at 14, TCP at 38, options to 78
        for n in 0..<full.count {
            let cut = Array(full[0..<n])
            let p = ScalarParser.parse(cut, link: .ethernet)
            #expect(PacketParser.parse(cut, link: .ethernet) == p, "cut at \(n)")
            let expected: MalformedReason? = switch n {
            case 0..<14: .truncatedLink
            case 14..<38: .truncatedIP
            case 38..<58: .truncatedTCP
            default: .truncatedTCPOptions
            }
            #expect(p.malformed == expected, "cut at \(n): \(String(describing: p.malformed))")
            #expect(p.hasTCP == (n >= 58), "cut at \(n)")
            #expect(p.network == (n >= 34 ? .ipv4 : .none), "cut at \(n)")
        }
        let v6 = Frame.ipv6(Self.syn, extensions: [Frame.ext(0), Frame.fragment()])
        for n in 0..<v6.count {
            let cut = Array(v6[0..<n])
            let p = ScalarParser.parse(cut, link: .raw)
            #expect(PacketParser.parse(cut, link: .raw) == p, "v6 cut at \(n)")
            #expect(p.malformed != nil && p.hasTCP == (n >= 76), "v6 cut at \(n)")
        }
    }
}
