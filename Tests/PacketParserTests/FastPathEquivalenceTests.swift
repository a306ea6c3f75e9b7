import PacketParser
import Testing
import TestSupport

/// The fast path must give exactly the reference parser's `ParsedPacket` on every input: the
/// edge-case corpus, random bytes, and well-formed packets with random mutations (which is where
/// the fast path's length checks are tested: a flipped IHL, length or data offset must send the
/// packet back to the scalar path, not through a wrong shortcut).
@Suite struct FastPathEquivalenceTests {
    static let links: [LinkType] = [.ethernet, .linuxSLL, .linuxSLL2, .raw, .ipv4, .ipv6, .null, .loop]

    /// Well-formed seeds for mutation, one per shape the fast path handles or nearly handles.
    static var seeds: [(LinkType, [UInt8])] {
        let syn = Frame.tcp(options: Frame.linuxSYNOptions)
        let ack = Frame.tcp(flags: 0x10, options: Frame.timestampOptions, payload: [1, 2, 3, 4])
        let rst = Frame.tcp(flags: 0x04)
        var out: [(LinkType, [UInt8])] = []
        for t in [syn, ack, rst, Frame.tcp(options: [2, 4, 5, 0xb4, 1, 3, 3, 8, 4, 2])] {
            out.append((.ethernet, Frame.eth(Frame.ipv4(t))))
            out.append((.ethernet, Frame.eth(Frame.ipv6(t), type: 0x86dd)))
            out.append((.ethernet, Frame.eth(Frame.ipv4(t), tags: [(0x8100, 3)])))
            out.append((.ethernet, Frame.eth(Frame.ipv6(t), type: 0x86dd, tags: [(0x88a8, 3), (0x8100, 4)])))
            out.append((.raw, Frame.ipv4(t)))
            out.append((.raw, Frame.ipv6(t)))
            out.append((.ipv4, Frame.ipv4(t)))
            out.append((.ipv6, Frame.ipv6(t)))
            out.append((.linuxSLL, Frame.sll(Frame.ipv4(t))))
            out.append((.linuxSLL2, Frame.sll2(Frame.ipv6(t), type: 0x86dd)))
            out.append((.null, Frame.null(Frame.ipv4(t))))
            out.append((.raw, Frame.ipv4(t, options: [1, 1, 1, 0])))
            out.append((.raw, Frame.ipv6(t, extensions: [Frame.ext(0), Frame.fragment()])))
        }
        return out
    }

    @Test func corpusAgrees() {
        for (name, link, bytes, _) in ParserEdgeCaseTests.corpus {
            #expect(PacketParser.parse(bytes, link: link) == ScalarParser.parse(bytes, link: link), "\(name)")
        }
    }

    @Test func randomBytesAgree() {
        var rng = SplitMix(state: 0xdecaf)
        var failures = 0
        for _ in 0..<100_000 {
            let n = rng.below(100)
            var bytes = [UInt8](repeating: 0, count: n)
            for i in 0..<n { bytes[i] = rng.byte() }
            // Bias towards the fast path's entry conditions so random bytes get past the first check.
            if n > 24 && rng.below(2) == 0 {
                bytes[12] = 0x08; bytes[13] = 0; bytes[14] = 0x45; bytes[23] = 6
            }
            let link = Self.links[rng.below(Self.links.count)]
            if !agree(bytes, link) { failures += 1; if failures > 5 { break } }
        }
        #expect(failures == 0)
    }

    @Test func mutatedPacketsAgree() {
        var rng = SplitMix(state: 0x5eed)
        let seeds = Self.seeds
        var failures = 0
        for _ in 0..<300_000 {
            let (link, seed) = seeds[rng.below(seeds.count)]
            var bytes = seed
            switch rng.below(4) {
            case 0:  // flip one byte
                bytes[rng.below(bytes.count)] = rng.byte()
            case 1:  // a few bit flips
                for _ in 0..<(1 + rng.below(3)) { bytes[rng.below(bytes.count)] ^= 1 << UInt8(rng.below(8)) }
            case 2:  // cut short
                bytes = Array(bytes[0..<rng.below(bytes.count + 1)])
            default:  // set a header byte to a boundary value
                bytes[rng.below(min(bytes.count, 64))] = [0, 1, 0x45, 0x4f, 0x50, 0x60, 0xff, 5, 6][rng.below(9)]
            }
            if !agree(bytes, link) { failures += 1; if failures > 5 { break } }
        }
        #expect(failures == 0)
    }

    /// The unmutated seeds also agree, and most take the fast path (they decode as TCP).
    @Test func seedsAgree() {
        for (link, bytes) in Self.seeds {
            #expect(agree(bytes, link))
            #expect(PacketParser.parse(bytes, link: link).hasTCP)
        }
    }

    func agree(_ bytes: [UInt8], _ link: LinkType) -> Bool {
        let fast = PacketParser.parse(bytes, link: link)
        let bytewise = bytes.withUnsafeBytes { raw in
            var p = ParsedPacket()
            PacketParser.parseWithoutSIMD(raw, link: link, into: &p)
            return p
        }
        let scalar = ScalarParser.parse(bytes, link: link)
        guard fast == scalar && bytewise == scalar else {
            Issue.record("\(link) \(bytes.map { String($0, radix: 16) }.joined(separator: " ")): fast \(fast) scalar \(scalar)")
            return false
        }
        return true
    }
}
