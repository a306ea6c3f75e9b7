import Lab
import PacketParser
import Testing
@testable import VerdictEngine

/// A queued packet whose TCP header lies past what the agent reads. The kernel's rules found the
/// header (nft walks the whole extension-header chain) and queued the packet for its flags, so it
/// is a SYN-ACK or RST whatever the agent could read of it: accepting it as `malformed` let a
/// spoofer pass every check with a Destination Options header of a few hundred bytes.
@Suite struct UnreadableHeaderTests {
    static let reflector = "2001:db8:ff::7"
    static let victim = "2001:db8:2::2"

    /// A raw IPv6 packet (as NFQUEUE hands it over) behind one Destination Options header of
    /// `padding` bytes, or behind `chain` headers of 8 bytes each.
    static func packet(_ flags: TCPFlags, from src: String = reflector, to dst: String = victim,
                       padding: Int = 0, chain: Int = 0, options: TCPOptions = .none,
                       seq: UInt32 = 7, ack: UInt32 = 0x1000_0001) -> [UInt8] {
        var spec = FrameSpec(source: IPAddress(src)!, destination: IPAddress(dst)!, sourcePort: 443,
                             destinationPort: 40000, flags: flags, sequence: seq, acknowledgment: ack)
        spec.options = options
        if padding > 0 { spec.ipv6Extensions.append(.destinationOptions(length: padding)) }
        spec.ipv6Extensions += Array(repeating: .destinationOptions(length: 8), count: chain)
        return FrameBuilder.frame(spec, link: .raw)
    }

    /// What `run` parses: the first `copyRange` bytes.
    static func copied(_ bytes: [UInt8], _ range: Int = Policy.defaultCopyRange) -> ParsedPacket {
        PacketParser.parse(Array(bytes.prefix(range)), link: .raw)
    }

    @Test(arguments: [TCPFlags.syn.union(.ack), .rst, [.rst, .ack]])
    func inboundHeaderPastTheCopyIsDropped(flags: TCPFlags) {
        let e = Engine(policy: policy(), seed: 1)
        let p = Self.copied(Self.packet(flags, padding: 304))
        #expect(!p.hasTCP && p.malformed == .truncatedExtensionHeader && p.network == .ipv6)
        #expect(e.decide(p, at: t(1)) == Decision(.drop, .unreadableHeader))
        #expect(e.stats.count(.unreadableHeader) == 1)
    }

    /// A chain of many small headers that fits in the copy is walked to its TCP header and judged
    /// (the kernel walks any chain, so a walk bound inside the copy would be a hole).
    @Test func longChainInsideTheCopyIsJudged() {
        let e = Engine(policy: policy(), seed: 1)
        let bytes = Self.packet([.syn, .ack], chain: 24)
        #expect(bytes.count < Policy.defaultCopyRange)
        #expect(e.decide(Self.copied(bytes), at: t(1)) == Decision(.drop, .unsolicitedSynack))
    }

    /// More headers than the parser walks (`ScalarParser.maxExtensionHeaders`; a chain that long
    /// no longer fits in the default copy): inline, dropped like a header past the copy. `score`
    /// cannot see the flags either, so it cannot tell whether the kernel queued it.
    @Test func chainLongerThanTheWalkIsDropped() {
        let e = Engine(policy: policy(), seed: 1)
        let p = PacketParser.parse(Self.packet([.syn, .ack], chain: ScalarParser.maxExtensionHeaders + 1), link: .raw)
        #expect(p.malformed == .extensionHeaderChainTooLong)
        #expect(e.decide(p, at: t(1)) == Decision(.drop, .unreadableHeader))
        #expect(e.decideObserved(p, at: t(1)) == Decision(.accept, .malformed))
    }

    @Test func outboundAllowlistedAndSpoofedSources() {
        let e = Engine(policy: policy(["2001:db8:2::/64"]) { $0.allowlist.insert(CIDR("2001:db8:ff::7/128")!) }, seed: 1)
        let outbound = Self.copied(Self.packet([.syn, .ack], from: Self.victim, to: "2001:db8:1::9", padding: 304))
        #expect(e.decide(outbound, at: t(1)) == Decision(.accept, .malformed))
        #expect(e.decide(outbound, at: t(1), side: .outside) == Decision(.drop, .spoofedSource))
        let allowlisted = Self.copied(Self.packet(.rst, padding: 304))
        #expect(e.decide(allowlisted, at: t(1)) == Decision(.accept, .allowlisted))
        // Nothing protected: the rules never queue it.
        let foreign = Self.copied(Self.packet(.rst, from: "2001:db8:1::9", to: "2001:db8:1::8", padding: 304))
        #expect(e.decide(foreign, at: t(1)) == Decision(.accept, .notProtected))
    }

    /// A flood of them is an attack on the victim's prefix, so the kernel gets armed (it then
    /// judges these packets itself) exactly as for unsolicited SYN-ACKs.
    @Test func floodStartsAnAttack() {
        let e = Engine(policy: policy { $0.attackRate = 100 }, seed: 1)
        for k in 0..<300 {
            let p = Self.copied(Self.packet(k % 2 == 0 ? [.syn, .ack] : .rst, from: "2001:db8:ff::\(k + 1)", padding: 304))
            _ = e.decide(p, at: t(10 + Double(k) * 0.001))
        }
        let events = e.drainAttackEvents()
        #expect(events.map(\.kind) == [.started])
        #expect(events.first?.prefix == CIDR("2001:db8:2::/64"))
    }

    /// `score` decides on the whole captured frame what `run` decided on its first 256 bytes:
    /// for every header chain length, direction and packet kind the rules queue, the verdicts
    /// agree, and a packet the rules do not queue stays `not-queued`.
    @Test func scoreAgreesWithRunAcrossTheCopyBoundary() {
        let kinds: [(TCPFlags, TCPOptions)] = [
            ([.syn, .ack], .none), ([.syn, .ack], TCPStack.linux.synOptions(mss: 1460, tsValue: 1)),
            (.rst, .none), ([.rst, .ack], .none), (.syn, .none), (.ack, .none),
        ]
        var compared = 0
        // One header of 8-400 bytes, or a chain of 1-28 headers of 8 bytes.
        let chains = stride(from: 0, through: 400, by: 8).map { ($0, 0) } + (1...28).map { (0, $0) }
        for (padding, chain) in chains {
            for (flags, options) in kinds {
                for (src, dst) in [(Self.reflector, Self.victim), (Self.victim, Self.reflector)] {
                    let bytes = Self.packet(flags, from: src, to: dst, padding: padding, chain: chain, options: options)
                    let full = PacketParser.parse(bytes, link: .raw)
                    let run = Engine(policy: policy(), seed: 3), score = Engine(policy: policy(), seed: 3)
                    // Asked first: deciding a packet the learn rule queues teaches the engine its flow.
                    let queued = score.wouldQueue(full, at: t(1))
                    let observed = score.decideObserved(full, at: t(1))
                    guard queued else {
                        #expect(observed.reason == .notQueued, "padding \(padding) chain \(chain) \(flags) \(src)")
                        continue
                    }
                    let inline = run.decide(Self.copied(bytes), at: t(1))
                    #expect(observed == inline, "padding \(padding) chain \(chain) \(flags) \(src) → \(dst)")
                    compared += 1
                }
            }
        }
        #expect(compared > 300)
    }

    /// A capture's own snap length is not the copy range: an IPv6 SYN-ACK cut at 64 bytes would
    /// have reached the agent whole, so `score` cannot say what `run` did and accepts it as
    /// `malformed`, as before; `run` never sees such a packet.
    @Test func snapLengthCutIsNotJudgedAsACopyCut() {
        let e = Engine(policy: policy(), seed: 1)
        let cut = PacketParser.parse(Array(Self.packet([.syn, .ack], padding: 16).prefix(64)), link: .raw)
        #expect(cut.malformed == .truncatedExtensionHeader || cut.malformed == .truncatedTCP)
        #expect(e.decideObserved(cut, at: t(1)) == Decision(.accept, .malformed))
        // Whole, the same packet is judged: unsolicited.
        let whole = PacketParser.parse(Self.packet([.syn, .ack], padding: 16), link: .raw)
        #expect(e.decideObserved(whole, at: t(1)) == Decision(.drop, .unsolicitedSynack))
    }

    /// The whole header past the copy in a capture: dropped by `score` as `run` drops it.
    @Test func capturedHeaderPastTheCopyIsDroppedByScore() {
        let e = Engine(policy: policy(), seed: 1)
        let full = PacketParser.parse(Self.packet([.syn, .ack], padding: 304), link: .raw)
        #expect(full.hasTCP)
        #expect(e.decideObserved(full, at: t(1)) == Decision(.drop, .unreadableHeader))
    }

    /// A SYN-ACK or RST with a data offset below 5: the kernel queues it by the flags at byte 13
    /// (nft does not check the data offset), the parser reads no TCP header of it. Inline it is
    /// dropped and counted towards arming like a header past the copy; `score` cannot see its
    /// flags and keeps `malformed`; the packet counts are unchanged (still no TCP header).
    @Test(arguments: [(TCPFlags.syn.union(.ack), 0), (.rst, 0), ([.rst, .ack], 4), ([.syn, .ack], 1)] as [(TCPFlags, UInt8)])
    func dataOffsetBelowFiveIsDroppedInline(flags: TCPFlags, dataOffset: UInt8) {
        for (src, dst) in [("198.51.100.7", "198.18.2.2"), (Self.reflector, Self.victim)] {
            var bytes = Self.packet(flags, from: src, to: dst)
            let tcp = src.contains(":") ? 40 : 20
            bytes[tcp + 12] = dataOffset << 4 | (bytes[tcp + 12] & 0x0f)
            let p = PacketParser.parse(bytes, link: .raw)
            #expect(!p.hasTCP && p.malformed == .badDataOffset && p.network != .none)
            let e = Engine(policy: policy(), seed: 1)
            #expect(e.decide(p, at: t(1)) == Decision(.drop, .unreadableHeader), "\(src) \(flags) doff \(dataOffset)")
            #expect(e.decideObserved(p, at: t(1)) == Decision(.accept, .malformed))
            // The protected host's own: accepted, it cannot be tracked.
            var own = Self.packet(flags, from: dst, to: src)
            own[tcp + 12] = dataOffset << 4
            #expect(e.decide(PacketParser.parse(own, link: .raw), at: t(1)) == Decision(.accept, .malformed))
        }
    }

    @Test func dataOffsetZeroFloodStartsAnAttack() {
        let e = Engine(policy: policy { $0.attackRate = 100 }, seed: 1)
        for k in 0..<300 {
            var bytes = Self.packet(k % 2 == 0 ? [.syn, .ack] : .rst, from: "2001:db8:ff::\(k + 1)")
            bytes[40 + 12] = 0
            _ = e.decide(PacketParser.parse(bytes, link: .raw), at: t(10 + Double(k) * 0.001))
        }
        #expect(e.drainAttackEvents().map(\.kind) == [.started])
    }
}
