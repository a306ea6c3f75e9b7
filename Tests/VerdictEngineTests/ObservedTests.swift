import Testing
import PacketParser
@testable import VerdictEngine
import TestSupport

@Suite struct ObservedTests {
    @Test func queuePredicateHandshake() {
        let p = policy()
        func q(_ src: String, _ dst: String, _ f: TCPFlags) -> Bool {
            Engine.wouldQueue(tcp(src: src, dst: dst, sport: 1, dport: 2, flags: f), policy: p, side: .unknown)
        }
        #expect(q(client, server, .syn))
        #expect(!q(server, client, .syn))          // inbound SYNs are not queued
        #expect(q(client, server, synack))          // protected server's SYN-ACK
        #expect(q(server, client, synack))
        #expect(q(server, client, .rst))
        #expect(q(client, server, rstack))
        #expect(!q(client, server, .ack))
        #expect(!q(server, client, [.ack, .fin]))
        #expect(!q(server, "203.0.113.1", synack))  // no protected endpoint
        var notTCP = tcp(src: client, dst: server, sport: 1, dport: 2, flags: .syn)
        notTCP.hasTCP = false
        #expect(!Engine.wouldQueue(notTCP, policy: p))
    }

    @Test func queuePredicateFull() {
        let p = policy { $0.track = .full }
        #expect(Engine.wouldQueue(tcp(src: server, dst: client, sport: 1, dport: 2, flags: .ack), policy: p))
        #expect(Engine.wouldQueue(tcp(src: server, dst: client, sport: 1, dport: 2, flags: .syn), policy: p))
        #expect(!Engine.wouldQueue(tcp(src: server, dst: "203.0.113.1", sport: 1, dport: 2, flags: .ack), policy: p))
    }

    @Test func observedReasons() {
        let e = Engine(policy: policy(), seed: 1)
        var cut = tcp(src: client, dst: server, sport: 1, dport: 2, flags: .syn)
        cut.hasTCP = false
        cut.malformed = .truncatedTCP
        #expect(e.decideObserved(cut, at: t(0)) == Decision(.accept, .malformed))
        var udp = ParsedPacket()
        udp.network = .ipv4; udp.ipProtocol = 17; udp.source = IPAddress(client)!; udp.destination = IPAddress(server)!
        #expect(e.decideObserved(udp, at: t(0)) == Decision(.accept, .notTCP))
        #expect(e.decideObserved(tcp(src: server, dst: "203.0.113.1", sport: 1, dport: 2, flags: synack), at: t(0)) == Decision(.accept, .notProtected))
        #expect(e.decideObserved(tcp(src: server, dst: client, sport: 1, dport: 2, flags: .ack), at: t(0)) == Decision(.accept, .notQueued))
        #expect(e.decideObserved(tcp(src: server, dst: client, sport: 1, dport: 2, flags: .syn), at: t(0)) == Decision(.accept, .notQueued))
        #expect(e.decideObserved(tcp(src: server, dst: client, sport: 1, dport: 2, flags: synack), at: t(0)) == Decision(.drop, .unsolicitedSynack))
        #expect(e.stats.decisions == 6)
    }

    /// No readable TCP header in a capture: accepted as malformed. Inline the kernel queued it
    /// for flags the agent could not read: dropped towards a protected host (UnreadableHeaderTests).
    /// A readable fixed header with inconsistent lengths is judged, inline and observed alike
    /// (run and score agree).
    @Test func malformedPacketsInlineAndObserved() {
        let e = Engine(policy: policy(), seed: 1)
        var cut = tcp(src: server, dst: client, sport: 1, dport: 2, flags: synack)
        cut.hasTCP = false
        cut.malformed = .truncatedTCP
        #expect(e.decideObserved(cut, at: t(0)) == Decision(.accept, .malformed))
        #expect(e.decide(cut, at: t(0)) == Decision(.drop, .unreadableHeader))
        var padded = tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack)
        padded.malformed = .badDataOffset
        #expect(e.decide(padded, at: t(0)) == Decision(.drop, .unsolicitedSynack))
        #expect(e.decideObserved(padded, at: t(0)) == Decision(.drop, .unsolicitedSynack))
    }

    @Test func everyDecisionHasOneReasonAndCountsAddUp() {
        let e = Engine(policy: policy { $0.track = .full }, seed: 5)
        var g = SplitMix(state: 8)
        let flagSets: [TCPFlags] = [.syn, synack, .rst, rstack, .ack, [.ack, .fin], [.syn, .rst], []]
        let addrs = [client, server, "198.18.2.99", "2001:db8:2::5", "2001:db8:ff::1", "203.0.113.3"]
        for k in 0..<5000 {
            let p = tcp(src: addrs.randomElement(using: &g)!, dst: addrs.randomElement(using: &g)!,
                        sport: UInt16.random(in: 1...5, using: &g), dport: UInt16.random(in: 1...5, using: &g),
                        flags: flagSets.randomElement(using: &g)!, seq: UInt32.random(in: 0...3, using: &g),
                        ack: UInt32.random(in: 0...3, using: &g), payload: UInt16.random(in: 0...2, using: &g))
            _ = e.decideObserved(p, at: t(Double(k) * 0.01), side: [Side.unknown, .inside, .outside].randomElement(using: &g)!)
        }
        let s = e.stats
        #expect(s.reasons.values.reduce(0, +) == 5000)
        #expect(s.decisions == 5000)
    }
}
