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
}
