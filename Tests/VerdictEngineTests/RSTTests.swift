import Testing
import PacketParser
@testable import VerdictEngine

@Suite struct RSTTests {
    @Test func refusedConnection() {
        let e = Engine(policy: policy { $0.rstRate = 0; $0.rstBurst = 1 }, seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 25, flags: .syn, seq: 500), at: t(0))
        // Never throttled: the buckets are nearly empty, and many refusals still pass.
        for k in 0..<10 {
            #expect(e.decide(tcp(src: server, dst: client, sport: 25, dport: 40000, flags: rstack, seq: 0, ack: 501), at: t(0.1 + Double(k) * 0.001))
                    == Decision(.accept, .rstRefused))
        }
        // In SYN-SENT a RST that does not acknowledge the SYN is not acceptable (RFC 9293 §3.10.7.3).
        // (One acknowledging data sent past the SYN ends a handshake the engine did not see
        // complete: LearnedFlowTests.)
        #expect(e.decide(tcp(src: server, dst: client, sport: 25, dport: 40000, flags: rstack, seq: 0, ack: 500), at: t(0.2)).verdict == .drop)
        #expect(e.decide(tcp(src: server, dst: client, sport: 25, dport: 40000, flags: rstack, seq: 0, ack: 0x8000_0000), at: t(0.2)).verdict == .drop)
        #expect(e.decide(tcp(src: server, dst: client, sport: 25, dport: 40000, flags: .rst, seq: 0, ack: 501), at: t(0.2)).verdict == .drop)
    }

    @Test func rstOnTrackedFlowAFewTimes() {
        let e = Engine(policy: policy { $0.rstRate = 0; $0.rstBurst = 1; $0.rstPrefixBurst = 1; $0.rstPrefixRate = 0 }, seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 500), at: t(0))
        _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 9, ack: 501), at: t(0.1))
        let rst = tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .rst, seq: 10)
        for _ in 0..<3 { #expect(e.decide(rst, at: t(1)).reason == .rstTracked) }
        // Then the flow's RSTs share the buckets (burst 1: one more passes, the next is dropped).
        #expect(e.decide(rst, at: t(1)).reason == .rstWithinRate)
        #expect(e.decide(rst, at: t(1)) == Decision(.drop, .rstRateLimit))
    }

    func established(_ e: Engine) {
        // Client window 1000 << 7, server window 500 << 7 (both scale 7).
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 1000, window: 64240), at: t(0))
        _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5000, ack: 1001, window: 65160), at: t(0.1))
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .ack, seq: 1001, ack: 5001, window: 1000), at: t(0.2))
        // 100 bytes from the server: the client's RCV.NXT for the server's stream is now 5101.
        _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: [.ack, .psh], seq: 5001, ack: 1001, window: 500, payload: 100), at: t(0.3))
    }

    @Test func rfc5961WithFullTracking() {
        let e = Engine(policy: policy { $0.track = .full }, seed: 1)
        established(e)
        func rst(_ seq: UInt32) -> Decision {
            e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .rst, seq: seq), at: t(0.4))
        }
        #expect(rst(5101) == Decision(.accept, .rstExact))
        #expect(rst(5102) == Decision(.accept, .rstInWindow))
        #expect(rst(5101 + 1000 * 128 - 1) == Decision(.accept, .rstInWindow))
        #expect(rst(5101 + 1000 * 128) == Decision(.drop, .rstOutOfWindow))
        #expect(rst(5100) == Decision(.drop, .rstOutOfWindow))
        #expect(rst(5101 &+ 0x8000_0000) == Decision(.drop, .rstOutOfWindow))
        // Towards the server: its RCV.NXT is 1001, its window 500 << 7.
        #expect(e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .rst, seq: 1001), at: t(0.4)).reason == .rstTracked)
    }

    @Test func rfc5961InboundToProtectedServer() {
        let e = Engine(policy: policy { $0.track = .full }, seed: 1)
        let srv = "198.18.2.10", cli = "203.0.113.4"
        _ = e.decide(tcp(src: srv, dst: cli, sport: 443, dport: 51000, flags: synack, seq: 900, ack: 101), at: t(0))
        _ = e.decide(tcp(src: cli, dst: srv, sport: 51000, dport: 443, flags: .ack, seq: 101, ack: 901, window: 200), at: t(0.1))
        _ = e.decide(tcp(src: srv, dst: cli, sport: 443, dport: 51000, flags: .ack, seq: 901, ack: 101, window: 300), at: t(0.1))
        #expect(e.decide(tcp(src: cli, dst: srv, sport: 51000, dport: 443, flags: .rst, seq: 101), at: t(0.2)).reason == .rstExact)
        #expect(e.decide(tcp(src: cli, dst: srv, sport: 51000, dport: 443, flags: .rst, seq: 150), at: t(0.2)).reason == .rstInWindow)
        #expect(e.decide(tcp(src: cli, dst: srv, sport: 51000, dport: 443, flags: .rst, seq: 100 + 300 * 128 + 5), at: t(0.2)).reason == .rstOutOfWindow)
    }

    @Test func handshakeModeDoesNotJudgeWindows() {
        let e = Engine(policy: policy(), seed: 1)
        established(e)
        // Without full tracking the data packets were never seen: the RST is merely tracked.
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .rst, seq: 99), at: t(0.4)).reason == .rstTracked)
    }

    @Test func bucketRefillsOverPacketTime() {
        let e = Engine(policy: policy { $0.rstRate = 10; $0.rstBurst = 5; $0.rstPrefixRate = 1000; $0.rstPrefixBurst = 1000 }, seed: 1)
        func rst(_ at: Double, _ sport: UInt16) -> Verdict {
            e.decide(tcp(src: server, dst: client, sport: sport, dport: 40000, flags: .rst, seq: 1), at: t(at)).verdict
        }
        var accepted = 0
        for k in 0..<20 where rst(10, UInt16(k + 1)) == .accept { accepted += 1 }
        #expect(accepted == 5)
        // 0.5 s later at 10/s: 5 tokens back, no more.
        accepted = 0
        for k in 0..<20 where rst(10.5, UInt16(k + 100)) == .accept { accepted += 1 }
        #expect(accepted == 5)
        // Another address in the same /24 has its own bucket.
        #expect(e.decide(tcp(src: server, dst: "198.18.2.3", sport: 7, dport: 40000, flags: .rst, seq: 1), at: t(10.5)).reason == .rstWithinRate)
        // Long idle: refilled to the burst, not beyond.
        accepted = 0
        for k in 0..<20 where rst(1000, UInt16(k + 200)) == .accept { accepted += 1 }
        #expect(accepted == 5)
        #expect(e.stats.count(.rstRateLimit) == 45)
    }

    @Test func prefixBucketLimitsCarpetBombing() {
        let e = Engine(policy: policy { $0.rstRate = 100; $0.rstBurst = 100; $0.rstPrefixRate = 0; $0.rstPrefixBurst = 30 }, seed: 1)
        var accepted = 0
        for k in 0..<250 {
            let d = e.decide(tcp(src: server, dst: "198.18.2.\(k)", sport: 9, dport: 40000, flags: .rst, seq: 1), at: t(1))
            if d.verdict == .accept { accepted += 1 }
        }
        #expect(accepted == 30)
    }

    @Test func ratesAreSharedAcrossQueues() {
        let e = Engine(policy: policy { $0.rstRate = 10; $0.rstBurst = 40; $0.queueCount = 4 }, seed: 1)
        var accepted = 0
        for k in 0..<100 where e.decide(tcp(src: server, dst: client, sport: UInt16(k), dport: 1, flags: .rst), at: t(1)).verdict == .accept {
            accepted += 1
        }
        #expect(accepted == 10)
    }

    @Test func backscatterIsRateLimited() {
        let e = Engine(policy: policy { $0.backscatterRate = 1; $0.backscatterBurst = 3 }, seed: 1)
        var reasons: [Reason] = []
        for k in 0..<6 {
            // Bare RSTs (seq = the unsolicited SYN-ACK's ack) from the protected host.
            reasons.append(e.decide(tcp(src: client, dst: server, sport: UInt16(40000 + k), dport: 443, flags: .rst, seq: 1234), at: t(5)).reason)
        }
        #expect(reasons == [.backscatter, .backscatter, .backscatter, .backscatterRateLimit, .backscatterRateLimit, .backscatterRateLimit])
        // RST|ACK answers a SYN (closed port), not a SYN-ACK: not backscatter.
        #expect(e.decide(tcp(src: client, dst: server, sport: 22, dport: 5555, flags: rstack, ack: 9), at: t(5)).reason == .rstSent)
    }
}

/// Guarded flows (`track_full_ports`, `track_full_hosts`): the window check of track = full for
/// just those, exact RSTs only, everything else as with track = handshake.
@Suite struct GuardedFlowTests {
    static func engine() -> Engine {
        Engine(policy: policy { $0.trackFullPorts = [179...179]; $0.trackFullHosts.insert(CIDR("203.0.113.9")!) }, seed: 1)
    }

    /// An established BGP session with 100 bytes from the peer: RCV.NXT of the peer's stream is 5101.
    static func bgp(_ e: Engine, peer: String = server, port: UInt16 = 179) {
        _ = e.decide(tcp(src: client, dst: peer, sport: 40000, dport: port, flags: .syn, seq: 1000), at: t(0))
        _ = e.decide(tcp(src: peer, dst: client, sport: port, dport: 40000, flags: synack, seq: 5000, ack: 1001, window: 65160), at: t(0.1))
        _ = e.decide(tcp(src: client, dst: peer, sport: 40000, dport: port, flags: .ack, seq: 1001, ack: 5001, window: 1000), at: t(0.2))
        _ = e.decide(tcp(src: peer, dst: client, sport: port, dport: 40000, flags: [.ack, .psh], seq: 5001, ack: 1001, window: 500, payload: 100), at: t(0.3))
    }

    @Test func guardedSessionTakesOnlyExactRSTs() {
        let e = Self.engine()
        Self.bgp(e)
        func rst(_ seq: UInt32) -> Decision {
            e.decide(tcp(src: server, dst: client, sport: 179, dport: 40000, flags: .rst, seq: seq), at: t(400))
        }
        // Before: handshake mode accepted three RSTs per flow whatever their sequence (rst-tracked).
        #expect(rst(5101 + 100) == Decision(.drop, .rstInexact))
        #expect(rst(5101 &- 1) == Decision(.drop, .rstOutOfWindow))
        #expect(rst(5101 &+ 1_000_000_000) == Decision(.drop, .rstOutOfWindow))
        #expect(rst(5101) == Decision(.accept, .rstExact))
        // A guarded peer host, any port.
        let g = Self.engine()
        Self.bgp(g, peer: "203.0.113.9", port: 5432)
        #expect(g.decide(tcp(src: "203.0.113.9", dst: client, sport: 5432, dport: 40000, flags: .rst, seq: 7), at: t(1)).reason == .rstOutOfWindow)
    }

    @Test func onlyGuardedFlowsAreQueuedAndTracked() {
        let p = policy { $0.trackFullPorts = [179...179] }
        #expect(Engine.wouldQueue(tcp(src: server, dst: client, sport: 179, dport: 40000, flags: .ack), policy: p))
        #expect(Engine.wouldQueue(tcp(src: client, dst: server, sport: 40000, dport: 179, flags: [.ack, .psh]), policy: p))
        #expect(!Engine.wouldQueue(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .ack), policy: p))
        let e = Engine(policy: p, seed: 1)
        #expect(e.decideObserved(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: .ack), at: t(1)).reason == .notQueued)
        // A session older than the engine is followed from the protected side's packets.
        #expect(e.decideObserved(tcp(src: client, dst: server, sport: 40001, dport: 179, flags: .ack, seq: 77, ack: 900, window: 1000),
                                 at: t(2)).reason == .flowTracked)
        #expect(e.decide(tcp(src: server, dst: client, sport: 179, dport: 40001, flags: .rst, seq: 905), at: t(3)).reason == .rstInexact)
        #expect(e.decide(tcp(src: server, dst: client, sport: 179, dport: 40001, flags: .rst, seq: 900), at: t(3)).reason == .rstExact)
    }
}
