import Testing
import PacketParser
import TestSupport
@testable import VerdictEngine

/// RST budgets that learn: a spread flood too thin for the static ceilings is seen against the
/// prefix's baseline and cut to it, and what is known good passes throughout.
@Suite struct RSTAttackTests {
    /// A spoofed RST to `dst` with random source, ports and sequence.
    static func forged(_ g: inout SplitMix, _ dst: String) -> ParsedPacket {
        let v6 = dst.contains(":")
        let src = v6 ? "2001:db8:ff::\(String(1 + g.below(0xfffe), radix: 16))" : "198.19.\(g.below(256)).\(1 + g.below(254))"
        return tcp(src: src, dst: dst, sport: UInt16(1024 + g.below(60000)), dport: UInt16(1 + g.below(65535)),
                   flags: g.below(3) == 0 ? rstack : .rst, seq: UInt32(truncatingIfNeeded: g.next()),
                   ack: UInt32(truncatingIfNeeded: g.next()))
    }

    static func spreadAddress(_ g: inout SplitMix, v6: Bool) -> String {
        v6 ? "2001:db8:2::\(String(g.next() & 0xffff, radix: 16)):\(String(g.next() & 0xffff, radix: 16))"
           : "198.18.2.\(g.below(256))"
    }

    /// `rate` spoofed RSTs a second for `seconds`, spread over every address of the /24 or /64,
    /// starting at `from`; how many passed.
    static func flood(_ e: Engine, _ g: inout SplitMix, rate: Int, seconds: Double, from: Double, v6: Bool) -> (passed: Int, sent: Int) {
        let n = Int(Double(rate) * seconds)
        var passed = 0
        for k in 0..<n {
            let at = from + Double(k) / Double(rate)
            if e.decide(forged(&g, spreadAddress(&g, v6: v6)), at: t(at)).verdict == .accept { passed += 1 }
        }
        return (passed, n)
    }

    @Test(arguments: [(500, false, 1 as UInt64), (2000, false, 2), (5000, false, 3), (500, true, 4), (2000, true, 5), (5000, true, 6)])
    func spreadFloodIsCutToItsBaseline(_ rate: Int, _ v6: Bool, _ seed: UInt64) {
        let e = Engine(policy: policy(), seed: seed)
        var g = SplitMix(state: seed)
        // 30 s of normal untracked RSTs (about 2 a second) teach the baseline.
        for k in 0..<60 {
            _ = e.decide(Self.forged(&g, Self.spreadAddress(&g, v6: v6)), at: t(Double(k) * 0.5))
        }
        let f = Self.flood(e, &g, rate: rate, seconds: 10, from: 30, v6: v6)
        #expect(Double(f.passed) <= 0.2 * Double(f.sent), "\(f.passed) of \(f.sent) passed at \(rate)/s")
        let started = e.drainAttackEvents()
        #expect(started.count == 1)
        #expect(started.first?.vector == .rst)
        #expect(started.first?.kind == .started)
        #expect(started.first?.prefix == CIDR(v6 ? "2001:db8:2::/64" : "198.18.2.0/24"))
        #expect(e.stats.activeRSTAttacks == 1)
        // Quiet: the attack ends, and untracked RSTs get the static budgets again.
        e.advance(to: t(60))
        let ended = e.drainAttackEvents()
        #expect(ended.map(\.kind) == [.ended])
        #expect(ended.first?.vector == .rst)
        #expect(e.stats.activeRSTAttacks == 0)
        var passed = 0
        for _ in 0..<20 where e.decide(Self.forged(&g, Self.spreadAddress(&g, v6: v6)), at: t(61)).verdict == .accept { passed += 1 }
        #expect(passed == 20)
    }

    /// Under the static ceilings before the change: a /24 gets 500 a second, so the whole of a
    /// 400-a-second flood passed.
    @Test func floodUnderTheStaticCeilingIsSeen() {
        let e = Engine(policy: policy(), seed: 9)
        var g = SplitMix(state: 9)
        let f = Self.flood(e, &g, rate: 400, seconds: 10, from: 20, v6: false)
        #expect(Double(f.passed) <= 0.2 * Double(f.sent), "\(f.passed) of \(f.sent)")
    }

    /// A flood at start (nothing learnt yet, warm-up running) is cut all the same.
    @Test func floodAtStartIsCut() {
        let e = Engine(policy: policy(), seed: 3)
        var g = SplitMix(state: 3)
        let f = Self.flood(e, &g, rate: 3000, seconds: 5, from: 0, v6: false)
        #expect(Double(f.passed) <= 0.2 * Double(f.sent), "\(f.passed) of \(f.sent)")
        #expect(e.drainAttackEvents().contains { $0.vector == .rst && $0.kind == .started })
    }

    /// A network wider than a /24 under a flood spread over all of it: each /24 stays under the
    /// prefix floor, the network as a whole does not.
    @Test func networkWideFloodIsSeenOnTheNetwork() {
        let e = Engine(policy: policy(["198.18.0.0/16"]), seed: 4)
        var g = SplitMix(state: 4)
        var passed = 0
        let n = 30_000
        for k in 0..<n {
            let dst = "198.18.\(g.below(256)).\(g.below(256))"
            if e.decide(Self.forged(&g, dst), at: t(10 + Double(k) / 3000)).verdict == .accept { passed += 1 }
        }
        #expect(Double(passed) <= 0.2 * Double(n), "\(passed) of \(n)")
        let ev = e.drainAttackEvents()
        #expect(ev.contains { $0.vector == .rst && $0.prefix == CIDR("198.18.0.0/16") })
        #expect(!ev.contains { $0.prefix.length == 120 })
    }

    /// A prefix that normally gets many untracked RSTs keeps getting them: the threshold and the
    /// hold follow its baseline.
    @Test func busyPrefixBaselineRaisesThreshold() {
        let e = Engine(policy: policy(), seed: 5)
        var g = SplitMix(state: 5)
        // 120 s at 40 a second: under the floor, so no attack, and the baseline learns ~40.
        let steady = Self.flood(e, &g, rate: 40, seconds: 120, from: 0, v6: false)
        #expect(steady.passed == steady.sent)
        #expect(e.drainAttackEvents().isEmpty)
        // 100 a second is under 4 × 40: still normal.
        let busier = Self.flood(e, &g, rate: 100, seconds: 5, from: 120, v6: false)
        #expect(busier.passed == busier.sent)
        #expect(e.drainAttackEvents().isEmpty)
        // A flood: held to about the baseline, far more than the 5-a-second minimum.
        let f = Self.flood(e, &g, rate: 2000, seconds: 10, from: 126, v6: false)
        #expect(f.passed > 10 * 20 && Double(f.passed) <= 0.05 * Double(f.sent), "\(f.passed) of \(f.sent)")
    }

    /// During an RST attack, what is known good passes exactly as before: refusals, RSTs on
    /// tracked flows, RSTs the protected side sends.
    @Test func knownGoodPassesDuringAnAttack() {
        let e = Engine(policy: policy(), seed: 6)
        var g = SplitMix(state: 6)
        _ = Self.flood(e, &g, rate: 3000, seconds: 2, from: 10, v6: false)
        #expect(e.stats.activeRSTAttacks == 1)
        var reasons: [Reason: Int] = [:]
        for k in 0..<200 {
            let now = 12 + Double(k) * 0.01
            let port = UInt16(40000 + k)
            let host = "198.18.2.\(2 + k % 90)"
            // Refused: SYN out, RST|ACK acknowledging it back.
            _ = e.decide(tcp(src: host, dst: server, sport: port, dport: 25, flags: .syn, seq: 100), at: t(now))
            let r1 = e.decide(tcp(src: server, dst: host, sport: 25, dport: port, flags: rstack, ack: 101), at: t(now + 0.001))
            // Aborted by the remote end after a handshake.
            _ = e.decide(tcp(src: host, dst: server, sport: port, dport: 443, flags: .syn, seq: 7), at: t(now))
            _ = e.decide(tcp(src: server, dst: host, sport: 443, dport: port, flags: synack, seq: 70, ack: 8), at: t(now + 0.002))
            let r2 = e.decide(tcp(src: server, dst: host, sport: 443, dport: port, flags: rstack, seq: 71, ack: 8), at: t(now + 0.003))
            // Aborted by the protected side.
            let r3 = e.decide(tcp(src: host, dst: server, sport: port, dport: 8443, flags: rstack, seq: 1, ack: 1), at: t(now + 0.004))
            for d in [r1, r2, r3] {
                #expect(d.verdict == .accept, "\(d.reason)")
                reasons[d.reason, default: 0] += 1
            }
            // The flood goes on meanwhile.
            for _ in 0..<30 { _ = e.decide(Self.forged(&g, Self.spreadAddress(&g, v6: false)), at: t(now + 0.005)) }
        }
        #expect(reasons == [.rstRefused: 200, .rstTracked: 200, .rstSent: 200])
        #expect(e.stats.activeRSTAttacks == 1)
    }

    /// Before: a flow lived 131 s after its handshake whatever happened, so the RST ending a
    /// five-minute connection was judged untracked (and under an attack, held).
    @Test func establishedFlowOutlivesTheSynHorizon() {
        let e = Engine(policy: policy(), seed: 7)
        _ = e.decide(tcp(src: client, dst: server, sport: 41000, dport: 443, flags: .syn, seq: 1000), at: t(0))
        _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 41000, flags: synack, seq: 5000, ack: 1001), at: t(0.05))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 41000, flags: rstack, seq: 9000, ack: 1500), at: t(300)).reason
                == .rstTracked)
        // A SYN nobody answered still expires at the SYN horizon.
        _ = e.decide(tcp(src: client, dst: server, sport: 41001, dport: 443, flags: .syn, seq: 1), at: t(0))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 41001, flags: rstack, ack: 2), at: t(300)).reason == .rstWithinRate)
    }

    /// The per-prefix state is bounded by its tables: 48 bytes a budget.
    @Test func budgetSlotIs48Bytes() {
        #expect(MemoryLayout<RSTBudget>.stride == 48)
    }
}
