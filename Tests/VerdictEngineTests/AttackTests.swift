import Testing
import PacketParser
@testable import VerdictEngine
import TestSupport

@Suite struct AttackDetectorTests {
    @Test func floodStartsAndEndsAnEventPerPrefix() {
        let e = Engine(policy: policy { $0.attackRate = 400; $0.queueCount = 2 }, seed: 1)
        // 1000 unsolicited SYN-ACKs/s to 198.18.2.0/24 for 3 s: above 200/s for this engine's share.
        var now = 10.0
        for k in 0..<3000 {
            now = 10 + Double(k) * 0.001
            _ = e.decide(tcp(src: "198.19.0.\(k % 200)", dst: "198.18.2.\(k % 250)", sport: 80, dport: UInt16(1000 + k % 5000), flags: synack), at: t(now))
        }
        let started = e.drainAttackEvents()
        #expect(started.count == 1)
        #expect(started.first?.kind == .started)
        #expect(started.first?.prefix == CIDR("198.18.2.0/24"))
        #expect(started.first.map { $0.synackDropRate >= 200 } == true)
        #expect(e.stats.activeAttacks == 1)
        #expect(e.drainAttackEvents().isEmpty)
        // Quiet: the attack ends ten seconds after the last busy second.
        e.advance(to: t(now + 5))
        #expect(e.drainAttackEvents().isEmpty)
        e.advance(to: t(now + 11))
        let ended = e.drainAttackEvents()
        #expect(ended.map(\.kind) == [.ended])
        #expect(ended.first?.startedAt == started.first?.at)
        #expect(e.stats.activeAttacks == 0)
    }

    @Test func legitimateTrafficRaisesNoEvent() {
        let e = Engine(policy: policy(), seed: 1)
        for k in 0..<5000 {
            let at = Double(k) * 0.001
            let syn = tcp(src: "198.18.2.\(k % 250)", dst: server, sport: UInt16(30000 + k % 30000), dport: 443, flags: .syn, seq: UInt32(k))
            _ = e.decide(syn, at: t(at))
            _ = e.decide(tcp(src: server, dst: "198.18.2.\(k % 250)", sport: 443, dport: UInt16(30000 + k % 30000), flags: synack, seq: 1, ack: UInt32(k + 1)), at: t(at + 0.0005))
        }
        #expect(e.drainAttackEvents().isEmpty)
        #expect(e.stats.count(.solicitedSynack) == 5000)
    }

    @Test func ipv6PrefixIsSlash64() {
        let e = Engine(policy: policy { $0.attackRate = 50; $0.rstPrefixRate = 0; $0.rstPrefixBurst = 10 }, seed: 1)
        for k in 0..<200 {
            _ = e.decide(tcp(src: "2001:db8:ff::\(k + 1)", dst: "2001:db8:2::\(k + 1)", sport: 80, dport: 80, flags: .rst), at: t(Double(k) * 0.001))
        }
        let ev = e.drainAttackEvents()
        #expect(ev.first?.prefix == CIDR("2001:db8:2::/64"))
        #expect(ev.first.map { $0.rstDropRate > 0 } == true)
    }
}

@Suite struct PropertyTests {
    /// Legitimate handshakes (SYNs from the protected side, answered, sometimes retransmitted or
    /// refused) interleaved with a spoofed SYN-ACK and RST flood with random tuples and acks:
    /// no legitimate packet is dropped, and every spoofed SYN-ACK is.
    @Test(arguments: [UInt64(1), 2, 3])
    func legitHandshakesInsideSpoofedFlood(seed: UInt64) {
        var g = SplitMix(state: seed)
        let e = Engine(policy: policy { $0.synTableCapacity = 4096 }, seed: seed &* 31)
        struct Pending { var c: String; var s: String; var cp: UInt16; var sp: UInt16; var isn: UInt32; var due: Double; var refused: Bool }
        var pending: [Pending] = []
        var now = 0.0
        var legitDrops = 0, legit = 0, spoofed = 0, spoofedDrops = 0
        for _ in 0..<40_000 {
            now += 0.0001
            switch Int.random(in: 0..<10, using: &g) {
            case 0:
                let v6 = Bool.random(using: &g)
                let p = Pending(c: v6 ? "2001:db8:2::\(Int.random(in: 1...9999, using: &g))" : "198.18.2.\(Int.random(in: 1...254, using: &g))",
                                s: v6 ? "2001:db8:ff::\(Int.random(in: 1...99, using: &g))" : "198.51.100.\(Int.random(in: 1...254, using: &g))",
                                cp: UInt16.random(in: 32768...60999, using: &g), sp: [443, 80, 22].randomElement(using: &g)!,
                                isn: g.next32(), due: now + Double.random(in: 0.001...0.5, using: &g), refused: Int.random(in: 0..<5, using: &g) == 0)
                legit += 1
                if e.decide(tcp(src: p.c, dst: p.s, sport: p.cp, dport: p.sp, flags: .syn, seq: p.isn), at: t(now)).verdict == .drop { legitDrops += 1 }
                if Bool.random(using: &g) {   // retransmitted SYN
                    legit += 1
                    if e.decide(tcp(src: p.c, dst: p.s, sport: p.cp, dport: p.sp, flags: .syn, seq: p.isn), at: t(now + 0.00001)).verdict == .drop { legitDrops += 1 }
                }
                pending.append(p)
            case 1, 2:
                if let i = pending.firstIndex(where: { $0.due <= now }) {
                    let p = pending.remove(at: i)
                    let reply = p.refused
                        ? tcp(src: p.s, dst: p.c, sport: p.sp, dport: p.cp, flags: rstack, seq: 0, ack: p.isn &+ 1)
                        : tcp(src: p.s, dst: p.c, sport: p.sp, dport: p.cp, flags: synack, seq: g.next32(), ack: p.isn &+ 1)
                    for _ in 0..<(Bool.random(using: &g) ? 2 : 1) {
                        legit += 1
                        if e.decide(reply, at: t(now), side: .outside).verdict == .drop { legitDrops += 1 }
                    }
                }
            default:
                let v6 = Bool.random(using: &g)
                let flags: TCPFlags = Int.random(in: 0..<4, using: &g) == 0 ? .rst : synack
                let p = tcp(src: v6 ? "2001:db8:ff::\(Int.random(in: 1...99, using: &g))" : "198.51.100.\(Int.random(in: 1...254, using: &g))",
                            dst: v6 ? "2001:db8:2::\(Int.random(in: 1...9999, using: &g))" : "198.18.2.\(Int.random(in: 1...254, using: &g))",
                            sport: [443, 80, 22].randomElement(using: &g)!, dport: UInt16.random(in: 32768...60999, using: &g),
                            flags: flags, seq: g.next32(), ack: g.next32())
                let d = e.decide(p, at: t(now), side: .outside)
                if flags == synack {
                    spoofed += 1
                    if d.verdict == .drop { spoofedDrops += 1 }
                }
            }
        }
        #expect(legit > 5000)
        #expect(legitDrops == 0)
        #expect(spoofedDrops == spoofed)
    }
}
