import Foundation
import PacketParser
@testable import Scoring
import Testing
import TestSupport
import VerdictEngine

/// The scoring tables (sessions, victims, reflectors) are keyed by addresses and ports the senders
/// pick. Keys built to collide under one known seed all land on one probe chain of a table hashed
/// with that seed (shown first, so the construction is real), and spread out under any other seed;
/// and nothing `score` reports depends on the seed.
@Suite struct HashFloodingTests {
    /// The seed the attacker is assumed to know (as it knew the old unkeyed hash).
    static let knownSeed: UInt64 = 0x5eed_0001
    /// Seeds the attacker does not know: what a table gets at random in production.
    static let otherSeeds: [UInt64] = [1, 0xdead_beef_cafe_f00d]
    /// Keys per table. Every table keeps its index at most half full, so with this many it has
    /// 1024 slots or more; keys whose hash has low 12 bits below `window` share home slots
    /// 0..<8 under every index size up to 4096.
    static let keys = 500
    static let window: UInt64 = 8
    static func collides(_ h: UInt64) -> Bool { h & 4095 < window }

    /// On a known seed: one cluster of all keys (the longest probe is most of them). On another:
    /// at half load a linear-probing table's longest chain stays near log n, the mean near 1.5.
    static func expectFlooded(_ s: ProbeStatistics, _ what: String) {
        print("\(what): \(s.entries) keys, longest probe \(s.longest), mean \(s.mean)")
        #expect(s.entries == keys, "\(what)")
        #expect(s.longest >= keys - Int(window), "\(what): \(s)")
    }

    static func expectBounded(_ s: ProbeStatistics, _ what: String) {
        print("\(what): \(s.entries) keys, longest probe \(s.longest), mean \(s.mean)")
        #expect(s.entries == keys, "\(what)")
        #expect(s.longest <= 32, "\(what): \(s)")
        #expect(s.mean <= 2.5, "\(what): \(s)")
    }

    /// Addresses of one protected /64 (a carpet over it offers 2^64) whose keyed hash under the
    /// known seed puts them on the same few home slots.
    static func collidingAddresses() -> [IPAddress] {
        let keyed = KeyedHash(knownSeed)
        var g = SplitMix(state: 42)
        let prefix = IPAddress("2001:db8:2::")!
        var found: [IPAddress] = []
        var tried = 0
        while found.count < keys {
            tried += 1
            var lanes = unsafeBitCast(prefix.bytes, to: SIMD2<UInt64>.self)
            lanes[1] = g.next()
            guard collides(keyed.hash(lanes[0], lanes[1])) else { continue }
            found.append(IPAddress(bytes: unsafeBitCast(lanes, to: SIMD16<UInt8>.self)))
        }
        return found
    }

    @Test func victimsStayBoundedUnderAnUnknownSeed() {
        let addresses = Self.collidingAddresses()
        let reflector = IPAddress("198.51.100.9")!
        func fill(_ seed: UInt64) -> ProbeStatistics {
            let table = VictimTable(capacity: 1 << 16, hash: KeyedHash(seed))
            for a in addresses { table.add(victim: a, reflector: reflector, synack: true) }
            #expect(table.count == Self.keys)
            return table.index.probeStatistics
        }
        Self.expectFlooded(fill(Self.knownSeed), "victims, known seed")
        for seed in Self.otherSeeds { Self.expectBounded(fill(seed), "victims, seed \(seed)") }
    }

    @Test func reflectorsStayBoundedUnderAnUnknownSeed() {
        let addresses = Self.collidingAddresses()
        func fill(_ seed: UInt64) -> ProbeStatistics {
            let table = ReflectorTable(capacity: 1 << 16, hash: KeyedHash(seed))
            for a in addresses { table.add(a) }
            #expect(table.count == Self.keys)
            return table.index.probeStatistics
        }
        Self.expectFlooded(fill(Self.knownSeed), "reflectors, known seed")
        for seed in Self.otherSeeds { Self.expectBounded(fill(seed), "reflectors, seed \(seed)") }
    }

    /// Spoofed SYN-ACKs to one victim from sources and ports the attacker picks: each a session.
    @Test func sessionsStayBoundedUnderAnUnknownSeed() {
        let keyed = KeyedHash(Self.knownSeed)
        var g = SplitMix(state: 7)
        var packets: [ParsedPacket] = []
        var p = tcp("198.18.0.1", 443, "203.0.113.7", 40_000, [.syn, .ack])
        while packets.count < Self.keys {
            p.source = IPAddress(v4: 0xC612_0000 | UInt32(truncatingIfNeeded: g.next()) & 0x1_ffff)
            p.sourcePort = UInt16(truncatingIfNeeded: g.next())
            p.destinationPort = UInt16(truncatingIfNeeded: g.next())
            guard Self.collides(SessionTable.key(of: p).0.hash(keyed)) else { continue }
            packets.append(p)
        }
        func fill(_ seed: UInt64) -> ProbeStatistics {
            let table = SessionTable(hashSeed: seed)
            for (i, p) in packets.enumerated() { table.observe(p, at: Int64(i) * 1_000_000) }
            #expect(table.active == Self.keys)
            return table.probeStatistics
        }
        Self.expectFlooded(fill(Self.knownSeed), "sessions, known seed")
        for seed in Self.otherSeeds { Self.expectBounded(fill(seed), "sessions, seed \(seed)") }
    }

    /// A session's probe statistics follow removals too (backward shift): after the colliding
    /// sessions time out, the index is empty again.
    @Test func expiredSessionsLeaveNoChain() {
        let table = SessionTable(hashSeed: Self.knownSeed)
        for i in 0..<100 { table.observe(tcp("198.18.0.\(i)", 4000, "203.0.113.7", 80, .syn), at: 0) }
        #expect(table.probeStatistics.entries == 100)
        table.observe(tcp("198.18.1.1", 4000, "203.0.113.7", 80, .syn), at: 3_600 * second)
        #expect(table.probeStatistics.entries == 1)
        #expect(table.probeStatistics.longest == 1)
    }

    // MARK: - `score` does not depend on the seed

    /// A generated capture with small tables (sessions evicted, victims and reflectors past
    /// their capacity), on one and on two threads: the same verdicts, session rows and reports,
    /// byte for byte, whatever the seed.
    @Test(arguments: [1, 2]) func aGeneratedCaptureScoresTheSameWhateverTheSeed(threads: Int) throws {
        let scoring = FrameScoringTests()
        let a = try scoring.score(FrameScoringTests.capture, threads: threads, hashSeed: 3)
        let b = try scoring.score(FrameScoringTests.capture, threads: threads, hashSeed: 0x1234_5678_9abc_def0)
        #expect(a.verdicts.count > 50_000)
        #expect(a.sessions.count > 2048)
        #expect(a.json.contains("\"evicted\": ") && !a.json.contains("\"evicted\": 0"))
        #expect(!a.json.contains("\"victims_overflow\": 0") && !a.json.contains("\"reflectors_overflow\": 0"))
        #expect(a == b)
    }

    /// Every shared capture, with every address protected (so SYN-ACKs and RSTs are judged and
    /// their victims counted): the same outcome under two seeds.
    @Test func sharedCapturesScoreTheSameWhateverTheSeed() throws {
        let names = ["evilfingers_nmap_syn_scan.pcap", "ppa_http_client_refuse.pcap", "cs_http_ip4and6.pcapng",
                     "sv_linux_sll_multi.pcap", "zeek_ipv6_exthdr_http.pcap"]
        var policy = Policy()
        policy.protected = PrefixSet([CIDR("0.0.0.0/0")!, CIDR("::/0")!])
        var scored = 0
        for name in names {
            guard let path = TestEnvironment.capture(name) else { continue }
            let scoring = FrameScoringTests()
            let a = try scoring.score(path, threads: 1, hashSeed: 3, policy: policy)
            let b = try scoring.score(path, threads: 1, hashSeed: 0x1234_5678_9abc_def0, policy: policy)
            #expect(!a.verdicts.isEmpty, "\(name)")
            #expect(a == b, "\(name)")
            scored += 1
        }
        if scored == 0 {
            return TestEnvironment.unavailable("no shared capture in \(TestEnvironment.capturesDirectory.path)")
        }
    }
}
