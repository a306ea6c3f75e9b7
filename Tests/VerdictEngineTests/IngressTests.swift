import Testing
import PacketParser
@testable import VerdictEngine
import TestSupport

@Suite struct IngressOnlyTests {
    func ingress(_ configure: (inout Policy) -> Void = { _ in }) -> Engine {
        Engine(policy: policy { $0.mode = .ingressOnly; configure(&$0) }, seed: 1)
    }

    @Test func legitimateSynackPassesWithLowScore() {
        let e = ingress()
        let d = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 1, ack: 2), at: t(0))
        #expect(d.verdict == .accept)
        #expect(d.reason == .synackScorePass)
        #expect(d.score < 30)
    }

    @Test func reflectedSynackIsScoredAndDropped() {
        let e = ingress()
        // A reflector answering a bare crafted SYN, to a service port, retransmitted: all three signs.
        let sa = tcp(src: server, dst: client, sport: 80, dport: 80, flags: synack, seq: 1, ack: 2, options: mssOnly)
        #expect(e.decide(sa, at: t(0)) == Decision(.accept, .synackScorePass, score: 50))
        let d = e.decide(sa, at: t(1))
        #expect(d.reason == .synackScoreDrop)
        #expect(d.verdict == .drop)
        #expect(d.score == 65)
        #expect(e.decide(sa, at: t(3)).score == 80)
    }

    @Test func retransmittedISNAtReflectorSpacingCounts() {
        let e = ingress()
        let sa = tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 4242, ack: 2, options: mssOnly)
        #expect(e.decide(sa, at: t(0)).score == 30)      // options only
        #expect(e.decide(sa, at: t(0.05)).score == 30)   // a duplicate on the wire, not a retransmission
        #expect(e.decide(sa, at: t(1.0)) == Decision(.accept, .synackScorePass, score: 45))
        let d = e.decide(sa, at: t(3.0))
        #expect(d.score == 60)
        #expect(d.verdict == .drop)
        // A legitimate client's retransmitted SYN-ACK on a Windows port is not enough.
        let win = tcp(src: server, dst: client, sport: 443, dport: 64000, flags: synack, seq: 99, ack: 2)
        #expect(e.decide(win, at: t(5)).verdict == .accept)
        #expect(e.decide(win, at: t(6)) == Decision(.accept, .synackScorePass, score: 35))
    }

    /// The lab's report: a Linux server retransmitting its SYN-ACK (1, 3, 7, 15, 31 s after the
    /// first, all five retries) to a Windows client on a port above Linux's ephemeral range,
    /// options without timestamps (Windows offers none), no attack anywhere. Port and
    /// retransmissions together stay below the threshold, so every copy is accepted.
    @Test func windowsClientRetransmittedSynacksAreNotDroppedWithoutAttack() {
        let e = ingress()
        // MSS 1460, SACK-permitted, window scale 8, no timestamps.
        let noTS = TCPOptionSignature(rawValue: 1460 | (9 << 16) | (1 << 20) | (1 << 22))
        #expect(!noTS.timestamps && noTS.sackPermitted && noTS.windowScale != nil)
        for (n, port) in [UInt16(61_000), 62_514, 65_535].enumerated() {
            let sa = tcp(src: "198.51.100.\(20 + n)", dst: "198.18.2.\(30 + n)", sport: 443, dport: port,
                         flags: synack, seq: 77 &* UInt32(n + 1), ack: 1000, options: noTS)
            var maxScore: UInt8 = 0
            for at in [0.0, 1, 3, 7, 15, 31] {
                let d = e.decide(sa, at: t(100 * Double(n) + at))
                #expect(d.verdict == .accept, "port \(port) at +\(at) s: \(d)")
                maxScore = max(maxScore, d.score)
            }
            // Port (20) and repeated retransmissions (30): the most this evidence can reach.
            #expect(maxScore == 50)
        }
    }

    /// A reflector's fourth and later copies (7, 15, 31 s) on a prefix attacked within the
    /// SYN-ACK horizon drop on their own, though the attack's rate signs are gone by then; the
    /// same copies on a prefix never attacked pass (three losses in a row are not evidence
    /// enough without an attack), and so do the first three after the attack.
    @Test func lateCopiesAfterAnAttackOnThePrefixDrop() {
        let e = Engine(policy: policy(["198.18.2.0/24", "198.18.7.0/24"]) { $0.mode = .ingressOnly }, seed: 1)
        // MSS, SACK-permitted, timestamps, window scale: a SYN forged with full options.
        let full = TCPOptionSignature(rawValue: 1460 | (9 << 16) | (1 << 20) | (1 << 21) | (1 << 22))
        func copies(_ dst: String, _ seq: UInt32, from start: Double) -> [Decision] {
            let sa = tcp(src: "198.51.100.99", dst: dst, sport: 443, dport: 40_000, flags: synack, seq: seq, ack: 1, options: full)
            return [0.0, 1, 3, 7, 15, 31].map { e.decide(sa, at: t(start + $0)) }
        }
        // Never attacked: all six copies pass.
        let quiet = copies("198.18.7.5", 11, from: 1)
        #expect(quiet.allSatisfy { $0.verdict == .accept }, "\(quiet)")
        // A bare-SYN reflection flood on 198.18.2.0/24 for two seconds.
        var g = SplitMix(state: 5)
        for k in 0..<6_000 {
            _ = e.decide(tcp(src: "198.19.\(Int.random(in: 0...255, using: &g)).\(Int.random(in: 1...254, using: &g))",
                             dst: "198.18.2.\(Int.random(in: 1...254, using: &g))", sport: 80,
                             dport: UInt16.random(in: 1024...65535, using: &g), flags: synack,
                             seq: g.next32(), ack: g.next32(), options: mssOnly), at: t(40 + Double(k) / 3_000))
        }
        #expect(e.drainAttackEvents().contains { $0.kind == .started })
        // Twenty seconds after the flood (its rate signs long gone, the attack ended): a full-options
        // reflected flow to an ephemeral port passes three copies and loses the rest.
        let tail = copies("198.18.2.77", 22, from: 62)
        #expect(tail.prefix(3).allSatisfy { $0.verdict == .accept }, "\(tail)")
        #expect(tail.dropFirst(3).allSatisfy { $0.verdict == .drop && $0.score >= 60 }, "\(tail)")
        // Another prefix was never attacked: still all pass.
        let other = copies("198.18.7.9", 33, from: 62)
        #expect(other.allSatisfy { $0.verdict == .accept }, "\(other)")
    }

    @Test func thresholdIsConfigurable() {
        let e = ingress { $0.scoreThreshold = 95 }
        let sa = tcp(src: server, dst: client, sport: 80, dport: 80, flags: synack, seq: 1, ack: 2, options: mssOnly)
        _ = e.decide(sa, at: t(0))
        _ = e.decide(sa, at: t(1))
        let d = e.decide(sa, at: t(3))
        #expect(d.verdict == .accept)
        #expect(d.score == 80)
    }

    /// Carpet bombing of a /24 from many reflectors, with legitimate clients in it: every reflected
    /// SYN-ACK is dropped once the context builds, no legitimate SYN-ACK is.
    @Test func carpetBombingWithLegitimateTraffic() {
        let e = ingress()
        var g = SplitMix(state: 21)
        var legitDrops = 0, attackDrops = 0, attackTotal = 0
        var now = 0.0
        // A quiet minute first: the baselines learn normal traffic.
        for _ in 0..<600 {
            now += 0.1
            let d = e.decide(tcp(src: "198.51.100.\(Int.random(in: 1...50, using: &g))", dst: "198.18.2.\(Int.random(in: 1...20, using: &g))",
                                 sport: 443, dport: UInt16.random(in: 32768...60999, using: &g), flags: synack,
                                 seq: g.next32(), ack: g.next32()), at: t(now))
            if d.verdict == .drop { legitDrops += 1 }
        }
        for k in 0..<20_000 {
            now += 0.0005
            if k % 20 == 0 {
                let d = e.decide(tcp(src: "198.51.100.\(Int.random(in: 1...50, using: &g))", dst: "198.18.2.\(Int.random(in: 1...20, using: &g))",
                                     sport: 443, dport: UInt16.random(in: 32768...60999, using: &g), flags: synack,
                                     seq: g.next32(), ack: g.next32()), at: t(now))
                if d.verdict == .drop { legitDrops += 1 }
            }
            attackTotal += 1
            let d = e.decide(tcp(src: "198.19.\(Int.random(in: 0...255, using: &g)).\(Int.random(in: 1...254, using: &g))",
                                 dst: "198.18.2.\(Int.random(in: 1...254, using: &g))", sport: 80,
                                 dport: UInt16.random(in: 1024...65535, using: &g), flags: synack,
                                 seq: g.next32(), ack: g.next32(), options: mssOnly), at: t(now))
            if d.verdict == .drop { attackDrops += 1 }
        }
        #expect(legitDrops == 0)
        #expect(Double(attackDrops) / Double(attackTotal) > 0.99)
    }
}

extension SplitMix {
    mutating func next32() -> UInt32 { UInt32(truncatingIfNeeded: next()) }
}
