import Testing
import PacketParser
@testable import VerdictEngine

/// Regressions for the review of the verdict engine (one test per finding).
@Suite struct ReviewFixTests {
    /// RSTs aimed at pending handshakes (SYN-SENT, not acknowledging the SYN) are drops, and
    /// drops start an attack like any other RST drop.
    @Test func synSentRSTFloodStartsAnAttack() {
        let e = Engine(policy: policy { $0.attackRate = 50 }, seed: 1)
        for k in 0..<100 {
            _ = e.decide(tcp(src: "198.18.2.\(k + 1)", dst: server, sport: 40000, dport: 443, flags: .syn, seq: 500), at: t(1))
        }
        for k in 0..<100 {
            let d = e.decide(tcp(src: server, dst: "198.18.2.\(k + 1)", sport: 443, dport: 40000, flags: rstack, ack: 7), at: t(1.01))
            #expect(d == Decision(.drop, .rstOutOfWindow))
        }
        let ev = e.drainAttackEvents()
        #expect(ev.map(\.kind) == [.started])
        #expect(ev.first?.prefix == CIDR("198.18.2.0/24"))
        #expect(ev.first.map { $0.rstDropRate >= 50 } == true)
    }

    /// RFC 7323 §2.2: the window of a SYN or SYN-ACK is never scaled, so before the client sends
    /// anything else its receive window is the raw 64240 bytes, not 64240 << 7.
    @Test func handshakeWindowsAreUnscaled() {
        let e = Engine(policy: policy { $0.track = .full }, seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 1000, window: 64240), at: t(0))
        _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5000, ack: 1001, window: 65160), at: t(0.1))
        func rst(_ seq: UInt32) -> Decision {
            e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .rst, seq: seq), at: t(0.15))
        }
        #expect(rst(5001 + 64239) == Decision(.accept, .rstInWindow))
        #expect(rst(5001 + 64240) == Decision(.drop, .rstOutOfWindow))
        // The client's next segment carries a scaled window: 1000 << 7 from then on.
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .ack, seq: 1001, ack: 5001, window: 1000), at: t(0.2))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .rst, seq: 5001 + 64240), at: t(0.3))
                == Decision(.accept, .rstInWindow))
    }

    /// track = full: a blind spoofer's segment outside the receiver's window moves neither RCV.NXT
    /// nor the window, so the flow's legitimate RSTs still pass; in-window segments still move
    /// them, across the 32-bit wrap too.
    @Test func offPathSegmentsDoNotMoveTheWindow() {
        let e = Engine(policy: policy { $0.track = .full }, seed: 1)
        let isn: UInt32 = 0xffff_ff00
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 1000), at: t(0))
        _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: isn, ack: 1001), at: t(0.1))
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .ack, seq: 1001, ack: isn &+ 1, window: 10), at: t(0.2))
        // The client's window is 10 << 7 = 1280 bytes from RCV.NXT = isn + 1.
        func from(_ seq: UInt32, _ len: UInt16, window: UInt16 = 500) {
            _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: [.ack, .psh], seq: seq, ack: 1001, window: window, payload: len), at: t(0.3))
        }
        func rst(_ seq: UInt32) -> Reason {
            e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .rst, seq: seq), at: t(0.4)).reason
        }
        // Spoofed: far ahead, just past the window's right edge, and behind; none moves RCV.NXT.
        from(isn &+ 1 &+ 1_000_000, 100, window: 65535)
        from(isn &+ 1 &+ 1181, 100)
        from(isn &- 5000, 100)
        #expect(rst(isn &+ 1) == .rstExact)
        #expect(rst(isn &+ 1 &+ 1_000_100) == .rstOutOfWindow)
        // In window, across the wrap: 300 bytes end at isn + 301 (= 0x2d after wrapping).
        from(isn &+ 1, 300)
        #expect(rst(isn &+ 301) == .rstExact)
        #expect(rst(isn &+ 1) == .rstOutOfWindow)
        // Exactly at the right edge is still inside.
        from(isn &+ 301, 1280)
        #expect(rst(isn &+ 1581) == .rstExact)
    }

    /// Ages saturate: a gap of 2^31 ms (24.8 days) or more is the oldest age, not 0; a small
    /// step back in packet time still reads as "now".
    @Test func longIdleSlotsAreOld() {
        #expect(age(1000, since: 400) == 600)
        #expect(age(1000, since: 3000) == 0)
        #expect(age(0x8000_0000, since: 0) == .max)
        #expect(age(0, since: 0x7fff_ffff) == .max)
        let days30 = 30.0 * 86_400
        let e = Engine(policy: policy { $0.rstRate = 0.001; $0.rstBurst = 2; $0.rstPrefixRate = 0.001; $0.rstPrefixBurst = 2 }, seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 500), at: t(10))
        // Reordered by a second: still the SYN's answer.
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 9, ack: 501), at: t(9)).reason == .solicitedSynack)
        _ = e.decide(tcp(src: client, dst: server, sport: 40001, dport: 443, flags: .syn, seq: 700), at: t(10))
        // 30 days later the SYN is long gone.
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40001, flags: synack, seq: 9, ack: 701), at: t(10 + days30))
                == Decision(.drop, .unsolicitedSynack))
        // A bucket emptied 30 days ago (1 token per 1000 s) has refilled to its burst.
        func rst(_ at: Double) -> Reason {
            e.decide(tcp(src: server, dst: "198.18.2.50", sport: 1, dport: 2, flags: .rst, seq: 1), at: t(at)).reason
        }
        #expect([rst(20), rst(20), rst(20)] == [.rstWithinRate, .rstWithinRate, .rstRateLimit])
        #expect(rst(20 + days30) == .rstWithinRate)
    }

    /// A RST flood spread over more /64s than the prefix-bucket table holds (16K + 1/8) cannot
    /// reset budgets by evicting buckets: a bucket that replaces an evicted one starts at that
    /// one's level, so the second pass over the same /64s is dropped, not accepted afresh.
    @Test func evictionDoesNotResetRSTBudgets() {
        let e = Engine(policy: policy(["2001:db8:2::/48"]) {
            $0.rstRate = 0.001; $0.rstBurst = 100; $0.rstPrefixRate = 0.001; $0.rstPrefixBurst = 1
            $0.rstNetworkBurst = 1e9
            // The static budgets alone (RST attacks have their own tests).
            $0.rstAttackFloor = 1e9; $0.rstNetworkAttackFloor = 1e9
        }, seed: 1)
        let keys = 40_000
        func pass(_ at: Double) -> Int {
            var accepted = 0
            for k in 0..<keys {
                let dst = "2001:db8:2:\(String(k, radix: 16))::1"
                let d = e.decide(tcp(src: "2001:db8:ff::1", dst: dst, sport: 80, dport: 80, flags: .rst, seq: 1), at: t(at + Double(k) * 1e-6))
                if d.verdict == .accept { accepted += 1 }
            }
            return accepted
        }
        let first = pass(1)
        // Only the buckets the table held before its first eviction had a token.
        #expect(first > 16_000 && first <= 16_384 + 16_384 / 8)
        #expect(pass(2) == 0)
        // A long pause refills every bucket it lands on: legitimate RSTs pass again.
        #expect(e.decide(tcp(src: "2001:db8:ff::1", dst: "2001:db8:2:1::1", sport: 80, dport: 80, flags: .rst, seq: 1), at: t(5000)).reason == .rstWithinRate)
    }

    /// Each configured protected prefix has one fixed RST bucket for flows nobody tracks: a
    /// spray over many /64s (each with budget to spare) gets no more than the network's burst,
    /// and another protected prefix keeps its own budget.
    @Test func protectedNetworkCapsRSTSpray() {
        let e = Engine(policy: policy(["2001:db8:2::/48", "198.18.2.0/24"]) {
            $0.rstRate = 0.001; $0.rstBurst = 100; $0.rstPrefixRate = 0.001; $0.rstPrefixBurst = 100
            $0.rstNetworkRate = 0.001; $0.rstNetworkBurst = 300
            $0.rstAttackFloor = 1e9; $0.rstNetworkAttackFloor = 1e9
        }, seed: 1)
        var accepted = 0
        for k in 0..<2000 {
            let dst = "2001:db8:2:\(String(k, radix: 16))::1"
            if e.decide(tcp(src: "2001:db8:ff::1", dst: dst, sport: 80, dport: 80, flags: .rst, seq: 1), at: t(1)).verdict == .accept { accepted += 1 }
        }
        #expect(accepted == 300)
        #expect(e.decide(tcp(src: server, dst: client, sport: 80, dport: 80, flags: .rst, seq: 1), at: t(1)).reason == .rstWithinRate)
        // The default network budget is far above the per-/64 one: legitimate traffic sees no change.
        #expect(Policy().rstNetworkBurst >= 10 * Policy().rstPrefixBurst)
    }
}
