import Testing
import PacketParser
@testable import VerdictEngine

@Suite struct SymmetricModeTests {
    @Test func synThenSynackIsSolicited() {
        let e = Engine(policy: policy(), seed: 1)
        #expect(e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 1000), at: t(0))
                == Decision(.accept, .synTracked))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 9000, ack: 1001), at: t(0.01))
                == Decision(.accept, .solicitedSynack))
    }

    @Test func synackWithoutSynIsDropped() {
        let e = Engine(policy: policy(), seed: 1)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 9000, ack: 1001), at: t(0))
                == Decision(.drop, .unsolicitedSynack))
    }

    @Test func synRetransmittedThenAnswered() {
        let e = Engine(policy: policy { $0.synackHorizon = 5 }, seed: 1)
        let syn = tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77)
        #expect(e.decide(syn, at: t(0)).reason == .synTracked)
        #expect(e.decide(syn, at: t(4)).reason == .synTracked)
        #expect(e.decide(syn, at: t(8)).reason == .synTracked)
        // 12 s after the first SYN but 4 s after the last copy: inside the SYN-ACK horizon.
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(12))
                == Decision(.accept, .solicitedSynack))
        #expect(e.stats.flowEntries == 1)
    }

    @Test func synackRetransmittedIsAccepted() {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(0))
        let sa = tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78)
        #expect(e.decide(sa, at: t(0.1)).reason == .solicitedSynack)
        #expect(e.decide(sa, at: t(1.1)).reason == .solicitedSynack)
        #expect(e.decide(sa, at: t(3.1)).reason == .solicitedSynack)
    }

    @Test(arguments: [UInt32(77), 79, 0, 78 &+ 0x8000_0000])
    func ackOffByOneIsDropped(ack: UInt32) {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(0))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: ack), at: t(0.1))
                == Decision(.drop, .unsolicitedSynack))
    }

    @Test func wrongPortsOrDirectionAreDropped() {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(0))
        #expect(e.decide(tcp(src: server, dst: client, sport: 444, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(0.1)).verdict == .drop)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40001, flags: synack, seq: 5, ack: 78), at: t(0.1)).verdict == .drop)
        #expect(e.decide(tcp(src: "198.51.100.8", dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(0.1)).verdict == .drop)
    }

    @Test func tcpFastOpenDataIsAcknowledged() {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 1000, payload: 300), at: t(0))
        // A server that takes the data acks ISN + 1 + 300; one that refuses it acks ISN + 1.
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 1301), at: t(0.1)).reason
                == .solicitedSynack)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 1001), at: t(0.2)).reason
                == .solicitedSynack)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 1300), at: t(0.3)).reason
                == .unsolicitedSynack)
    }

    @Test func synackAfterExpiryIsDropped() {
        let e = Engine(policy: policy { $0.synackHorizon = 3; $0.synHorizon = 10 }, seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(100))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(103.5)).reason
                == .unsolicitedSynack)
        let e2 = Engine(policy: policy { $0.synackHorizon = 3; $0.synHorizon = 10 }, seed: 1)
        _ = e2.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(100))
        #expect(e2.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(102.9)).reason
                == .solicitedSynack)
    }

    @Test func newSynReusingTupleReplacesOldISN() {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(0))
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 5000), at: t(1))
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(1.1)).verdict == .drop)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 5001), at: t(1.2)).verdict == .accept)
    }

    @Test func spoofedProtectedSourceFromOutside() {
        let e = Engine(policy: policy(), seed: 1)
        let forged = tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77)
        #expect(e.decide(forged, at: t(0), side: .outside) == Decision(.drop, .spoofedSource))
        // It created no state: the reflector's answer is still unsolicited.
        #expect(e.stats.flowEntries == 0)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(0.1), side: .outside).reason
                == .unsolicitedSynack)
        // The same SYN from inside is the real thing.
        #expect(e.decide(forged, at: t(1), side: .inside).reason == .synTracked)
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(1.1), side: .outside).reason
                == .solicitedSynack)
    }

    @Test func ipv6Handshake() {
        let e = Engine(policy: policy(), seed: 1)
        let c6 = "2001:db8:2::2", s6 = "2001:db8:ff::9"
        #expect(e.decide(tcp(src: c6, dst: s6, sport: 50000, dport: 80, flags: .syn, seq: 0xffff_ffff), at: t(0)).reason == .synTracked)
        // ISN + 1 wraps to 0.
        #expect(e.decide(tcp(src: s6, dst: c6, sport: 80, dport: 50000, flags: synack, seq: 1, ack: 0), at: t(0.1)).reason == .solicitedSynack)
        #expect(e.decide(tcp(src: s6, dst: c6, sport: 80, dport: 50001, flags: synack, seq: 1, ack: 0), at: t(0.1)).reason == .unsolicitedSynack)
        // An IPv4 SYN with the same low bytes does not answer an IPv6 SYN-ACK.
        #expect(e.decide(tcp(src: "2001:db8:ff::a", dst: c6, sport: 80, dport: 50000, flags: synack, seq: 1, ack: 0), at: t(0.1)).verdict == .drop)
    }

    @Test func allowlistIsNeverDropped() {
        let e = Engine(policy: policy { $0.allowlist.insert(CIDR("198.51.100.0/24")!) }, seed: 1)
        let d = e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(0))
        #expect(d == Decision(.accept, .allowlisted))
        #expect(e.decide(tcp(src: "203.0.113.9", dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(0)).verdict == .drop)
        // A flood of RSTs from the allowlisted network is accepted too.
        for k in 0..<500 {
            #expect(e.decide(tcp(src: server, dst: client, sport: UInt16(1000 + k), dport: 40000, flags: .rst, seq: 1), at: t(1)).verdict == .accept)
        }
    }

    @Test func notProtected() {
        let e = Engine(policy: policy(), seed: 1)
        #expect(e.decide(tcp(src: "203.0.113.1", dst: server, sport: 443, dport: 40000, flags: synack), at: t(0))
                == Decision(.accept, .notProtected))
    }

    @Test func serverRoleTracksRSTs() {
        let e = Engine(policy: policy(), seed: 1)
        let srv = "198.18.2.10", cli = "203.0.113.4"
        #expect(e.decide(tcp(src: srv, dst: cli, sport: 443, dport: 51000, flags: synack, seq: 900, ack: 101), at: t(0)).reason == .synackSent)
        #expect(e.decide(tcp(src: cli, dst: srv, sport: 51000, dport: 443, flags: .rst, seq: 101), at: t(1)).reason == .rstTracked)
        #expect(e.decide(tcp(src: cli, dst: srv, sport: 51001, dport: 443, flags: .rst, seq: 101), at: t(1)).reason == .rstWithinRate)
        #expect(e.decide(tcp(src: srv, dst: cli, sport: 443, dport: 51000, flags: .rst, seq: 901), at: t(1)).reason == .rstTracked)
    }

    @Test func counterPerReason() {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(0))
        for k in 0..<5 { _ = e.decide(tcp(src: server, dst: client, sport: 443, dport: UInt16(41000 + k), flags: synack), at: t(0)) }
        #expect(e.stats.count(.synTracked) == 1)
        #expect(e.stats.count(.unsolicitedSynack) == 5)
        #expect(e.stats.decisions == 6)
    }

    /// The policy can change under a running engine (SIGHUP) without losing tracked SYNs.
    @Test func updatePolicyKeepsState() {
        let e = Engine(policy: policy(), seed: 1)
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 77), at: t(0))
        e.updatePolicy(policy { $0.rstRate = 1 })
        #expect(e.decide(tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 5, ack: 78), at: t(0.1)).reason == .solicitedSynack)
        #expect(e.policy.rstRate == 1)
    }
}
