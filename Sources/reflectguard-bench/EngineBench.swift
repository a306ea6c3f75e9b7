#if canImport(Glibc)
import Glibc
#endif
import Lab
import PacketParser
import VerdictEngine

/// `reflectguard-bench engine`: parse + verdict per core on a mixed in-memory trace of what the
/// rules queue (raw IP, as NFQUEUE hands it over), the table's bytes per tracked SYN, and the
/// resident memory of an engine holding 1M tracked SYNs.
enum EngineBench {
    static func run() {
        let (buffer, slots) = trace()
        print("engine: \(slots.count) packets in the trace, \(buffer.count) bytes "
              + "(35% protected SYNs, 25% solicited SYN-ACKs, 25% spoofed SYN-ACKs, 10% RSTs, 5% refused)")
        // RG_ENGINE_BENCH_PASSES=N: N passes over the trace per measurement and no memory figure:
        // a fixed amount of work, for instruction counts under callgrind (N = 16 repeats what the
        // time-bounded rounds do there, where one chunk of 16 passes outlasts the 0.5 s).
        let passes = getenv("RG_ENGINE_BENCH_PASSES").flatMap { Int(String(cString: $0)) }
        // RG_ENGINE_BENCH_CAPACITY=N: flow table capacity for the speed figures (default 1M), to
        // see what a table sized to the site's real number of handshakes in flight costs.
        let capacity = getenv("RG_ENGINE_BENCH_CAPACITY").flatMap { Int(String(cString: $0)) } ?? 1 << 20
        print("engine: flow table capacity \(capacity)")
        var bestFull = Double.infinity, bestDecide = Double.infinity, bestFresh = Double.infinity
        var reasons = ""
        for _ in 0..<3 {
            let engine = Engine(policy: policy(capacity: capacity), seed: 0x5eed)
            bestFull = min(bestFull, measure(buffer, slots, engine, parse: true, passes: passes))
            bestDecide = min(bestDecide, measure(buffer, slots, engine, parse: false, passes: passes))
            bestFresh = min(bestFresh, measure(buffer, slots, Engine(policy: policy(capacity: capacity), seed: 0x5eed),
                                               parse: false, passes: passes, freshFlood: true))
            let s = engine.stats
            reasons = s.reasons.filter { $0.value > 0 }.sorted { $0.value > $1.value }
                .map { "\($0.key.token) \($0.value * 100 / max(1, s.decisions))%" }.joined(separator: ", ")
        }
        print("engine reasons: \(reasons)")
        print("engine parse+verdict: \(format(1000 / bestFull)) Mpps per core (\(format(bestFull)) ns/packet)")
        print("engine verdict only (pre-parsed): \(format(1000 / bestDecide)) Mpps per core (\(format(bestDecide)) ns/packet)")
        print("engine verdict only, fresh flood tuples (every spoofed SYN-ACK a new 4-tuple, as in a real flood): "
              + "\(format(1000 / bestFresh)) Mpps per core (\(format(bestFresh)) ns/packet)")
        print("engine target: \(1000 / bestFull >= 15 ? "met" : "NOT met") (>= 15 Mpps parse+verdict)")
        if passes == nil { memory() }
    }

    static func policy(capacity: Int) -> Policy {
        var p = Policy()
        p.protected.insert(CIDR("198.18.0.0/16")!)
        p.protected.insert(CIDR("2001:db8:2::/48")!)
        p.synTableCapacity = capacity
        return p
    }

    /// Handshakes of protected clients (SYN, then its SYN-ACK or a refusal), with a spoofed
    /// SYN-ACK flood and RSTs on unknown flows interleaved; 1/8 IPv6.
    static func trace() -> ([UInt8], [(Int, Int)]) {
        var rng: UInt64 = 0x5eed
        func next() -> UInt64 { rng = rng &* 6364136223846793005 &+ 1442695040888963407; return rng >> 16 }
        let synOpts = TCPOptions.none.mss(1460).sackPermitted().timestamps(1, 0).nop().windowScale(7)
        let saOpts = TCPOptions.none.mss(1460).sackPermitted().timestamps(2, 1).nop().windowScale(7)
        var buffer: [UInt8] = []
        var slots: [(Int, Int)] = []
        func add(_ s: FrameSpec) {
            let f = FrameBuilder.frame(s, link: .raw)
            slots.append((buffer.count, f.count)); buffer += f
        }
        func addr(_ v6: Bool, protected: Bool, _ n: UInt64) -> IPAddress {
            if v6 { return IPAddress("2001:db8:\(protected ? 2 : 0xff)::\(String(n & 0xffff, radix: 16))")! }
            return protected ? IPAddress(v4: 198, 18, UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n))
                : IPAddress(v4: 203, 0, 113, UInt8(truncatingIfNeeded: n))
        }
        for _ in 0..<8192 {
            let v6 = next() % 8 == 0
            let c = addr(v6, protected: true, next()), s = addr(v6, protected: false, next())
            let cp = UInt16(32768 + next() % 28000), sp: UInt16 = [443, 80, 25][Int(next() % 3)]
            let isn = UInt32(truncatingIfNeeded: next())
            var syn = FrameSpec(source: c, destination: s, sourcePort: cp, destinationPort: sp, flags: .syn, sequence: isn)
            syn.options = synOpts
            add(syn)
            if next() % 8 == 0 {
                add(FrameSpec(source: s, destination: c, sourcePort: sp, destinationPort: cp, flags: [.rst, .ack], acknowledgment: isn &+ 1))
            } else {
                var sa = FrameSpec(source: s, destination: c, sourcePort: sp, destinationPort: cp, flags: [.syn, .ack],
                                   sequence: UInt32(truncatingIfNeeded: next()), acknowledgment: isn &+ 1)
                sa.options = saOpts
                add(sa)
            }
            // The flood: reflectors answering forged SYNs, and forged RSTs.
            let victim = addr(v6, protected: true, next()), reflector = addr(v6, protected: false, next())
            var spoofed = FrameSpec(source: reflector, destination: victim, sourcePort: 80, destinationPort: UInt16(truncatingIfNeeded: next()),
                                    flags: [.syn, .ack], sequence: UInt32(truncatingIfNeeded: next()), acknowledgment: UInt32(truncatingIfNeeded: next()))
            spoofed.options = TCPOptions.none.mss(1460)
            add(spoofed)
            if next() % 5 < 2 {
                add(FrameSpec(source: reflector, destination: victim, sourcePort: 443, destinationPort: UInt16(truncatingIfNeeded: next()),
                              flags: .rst, sequence: UInt32(truncatingIfNeeded: next())))
            }
        }
        return (buffer, slots)
    }

    /// About 0.5 s of replaying the trace, packet time advancing 100 ns per packet (10 Mpps of
    /// traffic, so buckets refill and entries age as they would inline).
    ///
    /// Replayed as is, the flood is the same 8192 spoofed 4-tuples every pass, whose tag lines
    /// stay cached. `freshFlood` (pre-parsed only) gives every spoofed SYN-ACK (the ones with MSS
    /// alone) a new destination port each time, so its lookup lands on a random group of the 1M
    /// table, as a real flood's random tuples do; the port rewrite is timed with it.
    static func measure(_ buffer: [UInt8], _ slots: [(Int, Int)], _ engine: Engine, parse: Bool, passes: Int? = nil,
                        freshFlood: Bool = false) -> Double {
        var packets: [ParsedPacket] = []
        if !parse {
            packets = buffer.withUnsafeBytes { raw in
                slots.map { s in
                    var p = ParsedPacket()
                    PacketParser.parse(UnsafeRawBufferPointer(rebasing: raw[s.0..<(s.0 + s.1)]), link: .raw, into: &p)
                    return p
                }
            }
        }
        let flood = packets.map { $0.flags.isSYNACK && !$0.optionSignature.sackPermitted }
        var rng: UInt64 = 0x9e37_79b9_7f4a_7c15
        var packet = ParsedPacket()
        var sink: UInt64 = 0
        var done = 0
        var clock: Nanoseconds = 1_700_000_000_000_000_000
        let start = now()
        var elapsed: UInt64 = 0
        buffer.withUnsafeBytes { raw in
            repeat {
                for _ in 0..<(passes ?? 16) {
                    if parse {
                        for s in slots {
                            PacketParser.parse(UnsafeRawBufferPointer(rebasing: raw[s.0..<(s.0 + s.1)]), link: .raw, into: &packet)
                            clock &+= 100
                            let d = engine.decideObserved(packet, at: clock)
                            sink &+= UInt64(d.verdict.rawValue)
                        }
                    } else if freshFlood {
                        for k in 0..<packets.count {
                            var p = packets[k]
                            if flood[k] {
                                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                                p.destinationPort = UInt16(truncatingIfNeeded: rng >> 48)
                            }
                            clock &+= 100
                            sink &+= UInt64(engine.decideObserved(p, at: clock).verdict.rawValue)
                        }
                    } else {
                        for p in packets {
                            clock &+= 100
                            sink &+= UInt64(engine.decideObserved(p, at: clock).verdict.rawValue)
                        }
                    }
                    done += slots.count
                }
                elapsed = now() - start
            } while passes == nil && elapsed < 500_000_000
        }
        if sink == 42 { print("") }
        return Double(elapsed) / Double(done)
    }

    /// Resident memory before and after filling a 1M-entry table with distinct tracked SYNs.
    static func memory() {
        let n = 1 << 20
        let before = rssKiB()
        let engine = Engine(policy: policy(capacity: n), seed: 7)
        var p = ParsedPacket()
        p.network = .ipv4; p.hasTCP = true; p.ipProtocol = 6
        p.flags = .syn; p.destination = IPAddress(v4: 203, 0, 113, 9); p.destinationPort = 443
        p.optionSignature = TCPOptionSignature(rawValue: 1460 | (8 << 16) | (7 << 20))
        for i in 0..<n {
            p.source = IPAddress(v4: 198, 18, UInt8(truncatingIfNeeded: i >> 16), UInt8(truncatingIfNeeded: i >> 8))
            p.sourcePort = UInt16(truncatingIfNeeded: 1024 + (i & 0xff) * 250)
            p.sequence = UInt32(truncatingIfNeeded: i &* 2654435761)
            _ = engine.decide(p, at: Nanoseconds(i) * 1000)
        }
        let after = rssKiB()
        let s = engine.stats
        print("engine table: \(MemoryLayout<Int>.size * 8)-bit, \(s.flowSlots) slots for \(s.flowCapacity) SYNs, "
              + "\(format(s.bytesPerFlow)) bytes per slot, \(format(Double(s.flowTableBytes) / Double(s.flowCapacity))) bytes per tracked SYN at capacity")
        print("engine 1M tracked SYNs: \(s.flowEntries) entries, \(s.flowEvictions) evictions, "
              + "resident \(after / 1024) MiB (\((after - before) / 1024) MiB for the engine; target <= 100 MB)")
    }

    /// VmRSS from /proc/self/status, in KiB (0 if unreadable: the figure then says so by itself).
    static func rssKiB() -> Int {
        guard let f = fopen("/proc/self/status", "r") else { return 0 }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if s.hasPrefix("VmRSS:") {
                return Int(s.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 0
            }
        }
        return 0
    }

    /// This thread's CPU time: "per core" on a machine shared with builds, where wall time
    /// would count the time other processes hold the core.
    static func now() -> UInt64 {
        var ts = timespec()
        // Cannot fail for the calling thread's clock with a valid pointer; 0 would show as nonsense.
        _ = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func format(_ v: Double) -> String {
        let r = (v * 100).rounded() / 100
        return "\(r)"
    }
}
