// The invariants one fuzz input must keep, shared by the libFuzzer target (Fuzz/ParserEngineFuzz.swift,
// built by scripts/fuzz.sh with swiftc, which compiles this very file) and the regression test
// that replays Fuzz/corpus in the normal suite. Plain Swift over the public API of PacketParser and
// VerdictEngine: no Testing, no Foundation, so both builds take it unchanged.
import PacketParser
import VerdictEngine

/// How a fuzz input is read, byte by byte. Every byte string is a valid input.
///
/// - byte 0, the configuration: bits 0-2 the link type the packet records start at; bit 3
///   ingress-only mode; bit 4 track = full; bits 5-6 the base packet time (0, a 2024 epoch
///   time, just before the engine's 32-bit millisecond clock wraps, or a negative time); bit 7
///   an allowlisted host inside the protected /24.
/// - all bytes after it are one frame, parsed at every link type by both parsers (they must agree).
/// - the same bytes are also a sequence of packet records, each `[length][timing][variant]` then
///   `length` frame bytes (fewer at the end), so the engine's state machine runs across packets:
///   - timing: bits 6-7 the unit (0.1 ms, 10 ms, 1 s, 8 s) of bits 0-5 added to the packet time;
///     0xff steps time 2 s backwards (merged captures are not monotonic);
///   - variant: bits 0-1 the side (unknown, inside, outside, unknown); bits 2-3 move the source,
///     the destination or both into the protected networks (captured frames carry other
///     addresses, and would only ever be `not-protected`); bit 4 also decides the reply a peer
///     would send; bit 5 also a RST on the same 4-tuple; bit 6 uses `decide` (for packets the
///     rules queue, or whose TCP header the parser did not reach) instead of `decideObserved`;
///     bit 7 parses with the scalar reference.
public enum FuzzInvariants {
    public static let allLinks: [LinkType] = [.ethernet, .linuxSLL, .linuxSLL2, .raw, .ipv4, .ipv6, .null, .loop]

    /// Reasons that always come with a drop; every other reason always comes with an accept
    /// (an allowlisted drop becomes an accept with its own reason).
    public static let dropReasons: Set<Reason> = [
        .unsolicitedSynack, .synackScoreDrop, .rstOutOfWindow, .rstRateLimit, .backscatterRateLimit,
        .spoofedSource, .unreadableHeader, .ipv4Mapped,
    ]

    /// Reasons `decideObserved` gives packets the rules would never queue.
    static let notQueuedReasons: Set<Reason> = [.malformed, .notTCP, .notProtected, .notQueued]

    static let protectedV4 = IPAddress(v4: 198, 18, 2, 0)
    static let protectedV6 = IPAddress("2001:db8:2::")!

    /// The policy every input runs under, its mode, track and allowlist from the configuration
    /// byte. A flow table of 64 entries (80 slots) so a few dozen records already evict.
    public static func policy(config: UInt8) -> Policy {
        var p = Policy()
        p.protected = PrefixSet([CIDR("198.18.2.0/24")!, CIDR("2001:db8:2::/64")!])
        if config & 0x80 != 0 { p.allowlist = PrefixSet([CIDR("198.18.2.200/32")!]) }
        p.mode = config & 0x08 != 0 ? .ingressOnly : .symmetric
        p.track = config & 0x10 != 0 ? .full : .handshake
        p.synTableCapacity = 64
        // Low rates, so a short input reaches the buckets' and the attack detector's limits.
        p.rstRate = 5; p.rstBurst = 4
        p.rstPrefixRate = 20; p.rstPrefixBurst = 10
        p.backscatterRate = 2; p.backscatterBurst = 3
        p.attackRate = 10
        return p
    }

    static func baseTime(config: UInt8) -> Nanoseconds {
        switch (config >> 5) & 3 {
        case 0: return 0
        case 1: return 1_700_000_000 * 1_000_000_000
        // 3 s before 2^32 ms: the engine's millisecond clock wraps within the input.
        case 2: return (Int64(UInt32.max) - 3_000) * 1_000_000
        default: return -5 * 1_000_000_000
        }
    }

    /// Runs every check over one input; returns what failed (empty when all held). Each failure
    /// names the invariant and the numbers, so a crash report says what broke without a debugger.
    /// `observe` sees every decision (scripts/fuzz.sh reasons: which reasons a corpus reaches).
    public static func check(_ input: UnsafeRawBufferPointer, observe: ((Decision) -> Void)? = nil) -> [String] {
        var failures: [String] = []
        guard input.count > 0 else { return failures }
        let config = input[0]
        let body = UnsafeRawBufferPointer(rebasing: input[1...])

        // 1. The whole body as one frame, at every link type: fast path == scalar reference.
        for link in allLinks { compareParsers(body, link: link, at: "body", into: &failures) }

        // 2. The body as a sequence of packet records through one engine.
        let link = allLinks[Int(config & 7)]
        let engine = Engine(policy: policy(config: config), seed: 0x5eed_f022)
        var now = baseTime(config: config)
        var tally: [Reason: UInt64] = [:]
        var calls: UInt64 = 0
        var packet = ParsedPacket()
        var offset = 0
        var record = 0
        while offset + 3 <= body.count {
            let length = Int(body[offset]), timing = body[offset + 1], variant = body[offset + 2]
            offset += 3
            let end = min(body.count, offset + length)
            let frame = UnsafeRawBufferPointer(rebasing: body[offset..<end])
            offset = end
            record += 1
            let at = "record \(record)"

            for l in allLinks { compareParsers(frame, link: l, at: at, into: &failures) }
            if variant & 0x80 != 0 {
                ScalarParser.parse(frame, link: link, into: &packet)
            } else {
                PacketParser.parse(frame, link: link, into: &packet)
            }

            now = advance(now, timing)
            let side: Side = [.unknown, .inside, .outside, .unknown][Int(variant & 3)]
            var p = packet
            moveIntoProtected(&p, which: (variant >> 2) & 3)
            var batch = [p]
            if p.hasTCP && variant & 0x10 != 0 { batch.append(reply(to: p)) }
            if p.hasTCP && variant & 0x20 != 0 { batch.append(rst(after: p, salt: timing)) }
            for (i, q) in batch.enumerated() {
                let queued = engine.wouldQueue(q, at: now, side: side)
                // Inline the kernel also queues packets whose TCP header the agent's copy or walk
                // does not reach (the parser then reports the IP header and a malformed cut).
                let cut = !q.hasTCP && q.network != .none && q.malformed != nil
                let useDecide = variant & 0x40 != 0 && (queued || cut)
                let d = useDecide ? engine.decide(q, at: now, side: side)
                    : engine.decideObserved(q, at: now, side: side)
                calls += 1
                observe?(d)
                tally[d.reason, default: 0] += 1
                checkDecision(d, packet: q, queued: queued, observed: !useDecide,
                              at: "\(at).\(i)", into: &failures)
            }
        }
        // Idle time passes: attacks end, events drain; none of it may trap.
        engine.advance(to: now &+ 30_000_000_000)
        _ = engine.drainAttackEvents()

        let s = engine.stats
        if s.decisions != calls { failures.append("stats.decisions \(s.decisions) != \(calls) calls") }
        let summed = s.reasons.values.reduce(0, +)
        if summed != s.decisions { failures.append("reason counts sum \(summed) != decisions \(s.decisions)") }
        for r in Reason.allCases where s.count(r) != tally[r, default: 0] {
            failures.append("stats count of \(r.token) \(s.count(r)) != \(tally[r, default: 0]) decisions seen")
        }
        if s.flowEntries < 0 || s.flowEntries > s.flowSlots {
            failures.append("flow entries \(s.flowEntries) outside 0...\(s.flowSlots) slots")
        }
        if s.activeAttacks < 0 || s.activeAttacks > 256 {
            failures.append("active attacks \(s.activeAttacks) outside 0...256")
        }
        return failures
    }

    static func compareParsers(_ frame: UnsafeRawBufferPointer, link: LinkType, at: String,
                               into failures: inout [String]) {
        var fast = ParsedPacket(), scalar = ParsedPacket(), noSIMD = ParsedPacket()
        PacketParser.parse(frame, link: link, into: &fast)
        ScalarParser.parse(frame, link: link, into: &scalar)
        PacketParser.parseWithoutSIMD(frame, link: link, into: &noSIMD)
        if fast != scalar { failures.append("\(at) \(link): fast path \(fast) != scalar \(scalar)") }
        if noSIMD != scalar { failures.append("\(at) \(link): parseWithoutSIMD \(noSIMD) != scalar \(scalar)") }
        // Offsets point inside the frame (they are what later stages index with).
        if Int(scalar.networkOffset) > frame.count || Int(scalar.transportOffset) > frame.count {
            failures.append("\(at) \(link): offsets \(scalar.networkOffset)/\(scalar.transportOffset) beyond \(frame.count) bytes")
        }
        if scalar.hasTCP && scalar.network == .none {
            failures.append("\(at) \(link): TCP without a network header")
        }
    }

    static func checkDecision(_ d: Decision, packet: ParsedPacket, queued: Bool, observed: Bool, at: String,
                              into failures: inout [String]) {
        let wantDrop = dropReasons.contains(d.reason)
        if (d.verdict == .drop) != wantDrop {
            failures.append("\(at): \(d.verdict.token) with reason \(d.reason.token)")
        }
        if d.score > 100 { failures.append("\(at): score \(d.score) > 100") }
        guard observed else { return }
        // No readable TCP header: accepted as malformed (or not-tcp). A readable fixed header is
        // judged even when the frame is malformed (lengths inconsistent, options cut).
        if !packet.hasTCP && d.reason != (packet.malformed != nil ? .malformed : .notTCP) {
            failures.append("\(at): packet without a TCP header decided \(d.reason.token)")
        }
        // What the rules would not queue is accepted with the reason why, and the rest is judged;
        // except one whose header lies past the copy range, which `run` could not read: a
        // protected host's own is accepted as `malformed` there (run parsed no TCP header).
        let pastCopy = Int(packet.transportOffset) - Int(packet.networkOffset) + 20 > Policy.defaultCopyRange
        if packet.hasTCP && queued == notQueuedReasons.contains(d.reason) && !(pastCopy && d.reason == .malformed) {
            failures.append("\(at): wouldQueue \(queued) but reason \(d.reason.token)")
        }
        if packet.hasTCP && pastCopy && queued && d.reason != .malformed && d.reason != .unreadableHeader
            && d.reason != .allowlisted && d.reason != .spoofedSource
            && d.reason != .ipv4Mapped && d.reason != .ipv4MappedSent {
            failures.append("\(at): header past the copy range decided \(d.reason.token)")
        }
    }

    static func advance(_ now: Nanoseconds, _ timing: UInt8) -> Nanoseconds {
        if timing == 0xff { return now &- 2_000_000_000 }
        let units: [Int64] = [100_000, 10_000_000, 1_000_000_000, 8_000_000_000]
        return now &+ Int64(timing & 0x3f) * units[Int(timing >> 6)]
    }

    /// Rewrites addresses into the protected networks, keeping the family and the host part.
    static func moveIntoProtected(_ p: inout ParsedPacket, which: UInt8) {
        func moved(_ a: IPAddress, v4: Bool) -> IPAddress {
            var b = a.bytes
            if v4 {
                // The host byte stays: .200 is the allowlisted host when bit 7 of the config is set.
                b = protectedV4.bytes
                b[15] = a.bytes[15]
            } else {
                for i in 0..<8 { b[i] = protectedV6.bytes[i] }
            }
            return IPAddress(bytes: b)
        }
        guard p.network != .none else { return }
        let v4 = p.network == .ipv4
        if which & 1 != 0 { p.source = moved(p.source, v4: v4) }
        if which & 2 != 0 { p.destination = moved(p.destination, v4: v4) }
    }

    /// What the other end would answer: a SYN-ACK to a SYN (acking its ISN and any Fast Open
    /// data), or a refusal when bit 16 of the ISN is set; an ACK to a SYN-ACK; otherwise a RST at
    /// the acknowledged sequence number.
    static func reply(to p: ParsedPacket) -> ParsedPacket {
        var r = p
        r.source = p.destination; r.destination = p.source
        r.sourcePort = p.destinationPort; r.destinationPort = p.sourcePort
        r.payloadLength = 0
        if p.flags.isSYN && p.sequence & 0x1_0000 != 0 {
            // A refused connection (nothing listens): RST+ACK acking the SYN, seq 0 (RFC 9293 §3.10.7.1).
            r.flags = [.rst, .ack]
            r.sequence = 0
            r.acknowledgment = p.sequence &+ 1 &+ UInt32(p.payloadLength)
        } else if p.flags.isSYN {
            r.flags = [.syn, .ack]
            r.sequence = p.acknowledgment ^ 0x9e37_79b9
            r.acknowledgment = p.sequence &+ 1 &+ UInt32(p.payloadLength)
        } else if p.flags.isSYNACK {
            r.flags = [.ack]
            r.sequence = p.acknowledgment
            r.acknowledgment = p.sequence &+ 1
        } else {
            r.flags = [.rst]
            r.sequence = p.acknowledgment
            r.acknowledgment = 0
        }
        return r
    }

    static func rst(after p: ParsedPacket, salt: UInt8) -> ParsedPacket {
        var r = p
        r.flags = salt & 1 == 0 ? [.rst] : [.rst, .ack]
        r.sequence = p.sequence &+ UInt32(p.payloadLength) &+ UInt32(salt >> 1)
        r.payloadLength = 0
        return r
    }
}
