import PacketParser
import Testing
@testable import VerdictEngine

/// IPv6 packets with an IPv4-mapped address (`::ffff:a.b.c.d`), which the engine stores exactly
/// as the IPv4 host's address. Unmarked, such a packet matched the IPv4 protected networks and
/// read and wrote the IPv4 host's flows and budgets; marked (as the parser marks it), it is judged
/// on the IPv6 prefixes alone and touches no state.
@Suite struct MappedAddressTests {
    /// `tcp(...)` as the parser hands over an IPv6 header with such an address.
    static func v6(src: String, dst: String, sport: UInt16, dport: UInt16, flags: TCPFlags,
                   seq: UInt32 = 0, ack: UInt32 = 0) -> ParsedPacket {
        var p = tcp(src: src, dst: dst, sport: sport, dport: dport, flags: flags, seq: seq, ack: ack)
        p.network = .ipv6
        p.ipv4MappedInIPv6 = IPAddress(src)!.isIPv4Mapped || IPAddress(dst)!.isIPv4Mapped
        return p
    }

    /// The crafted SYN of a protected IPv4 host's alias no longer makes the reflector's IPv4
    /// SYN-ACK look solicited. Before: `syn-tracked`, then `solicited-synack`.
    @Test func anIPv6SYNFromTheAliasSeedsNoIPv4Flow() {
        let e = Engine(policy: policy(), seed: 1)
        let syn = Self.v6(src: "::ffff:198.18.2.2", dst: "::ffff:203.0.113.5", sport: 40000, dport: 443, flags: .syn, seq: 1000)
        #expect(e.decide(syn, at: t(1)) == Decision(.accept, .notProtected))
        #expect(Engine.wouldQueue(syn, policy: policy()) == false)
        #expect(e.stats.flowEntries == 0)
        let reply = tcp(src: "203.0.113.5", dst: "198.18.2.2", sport: 443, dport: 40000, flags: synack, seq: 9, ack: 1001)
        #expect(e.decide(reply, at: t(1.1)) == Decision(.drop, .unsolicitedSynack))
    }

    /// The IPv4 host's real flow is not answered by its IPv6 alias either: an IPv6 SYN-ACK from
    /// the mapped peer is not the IPv4 reply, and leaves the flow waiting for it. Before: it was
    /// `solicited-synack`, and marked the flow's handshake done.
    @Test func anIPv4FlowIsNotAnsweredByItsIPv6Alias() {
        let e = Engine(policy: policy(), seed: 1)
        let syn = tcp(src: "198.18.2.2", dst: "203.0.113.5", sport: 40000, dport: 443, flags: .syn, seq: 1000)
        #expect(e.decide(syn, at: t(1)) == Decision(.accept, .synTracked))
        let alias = Self.v6(src: "::ffff:203.0.113.5", dst: "::ffff:198.18.2.2", sport: 443, dport: 40000, flags: synack, seq: 9, ack: 1001)
        #expect(e.decide(alias, at: t(1.1)) == Decision(.accept, .notProtected))
        let reply = tcp(src: "203.0.113.5", dst: "198.18.2.2", sport: 443, dport: 40000, flags: synack, seq: 9, ack: 1001)
        #expect(e.decide(reply, at: t(1.2)) == Decision(.accept, .solicitedSynack))
    }

    /// IPv6 SYN-ACKs to the alias of a protected IPv4 host are not to that host (nft matches
    /// them against `protected6`, which does not hold it): not queued, and no attack on its /24.
    /// Before: 3000 `unsolicited-synack` drops and an attack started on 198.18.2.0/24.
    @Test func synacksToTheAliasAreNotAnAttackOnTheIPv4Host() {
        let pol = policy { $0.attackRate = 400; $0.queueCount = 2 }
        let e = Engine(policy: pol, seed: 1)
        for k in 0..<3000 {
            let p = Self.v6(src: "2001:db8:ff::\(k % 200 + 1)", dst: "::ffff:198.18.2.\(k % 250)", sport: 80,
                            dport: UInt16(1000 + k % 5000), flags: synack)
            #expect(Engine.wouldQueue(p, policy: pol) == false)
            #expect(e.decideObserved(p, at: t(10 + Double(k) * 0.001)) == Decision(.accept, .notProtected))
        }
        #expect(e.drainAttackEvents().isEmpty)
        #expect(e.stats.activeAttacks == 0)
    }

    /// A protected IPv6 host talking to a mapped peer: its own SYN is accepted and kept nowhere,
    /// and what comes back is dropped, never left unjudged.
    @Test func aProtectedIPv6HostsMappedPeerIsRefused() {
        let e = Engine(policy: policy(), seed: 1)
        let syn = Self.v6(src: "2001:db8:2::5", dst: "::ffff:203.0.113.5", sport: 40001, dport: 443, flags: .syn, seq: 1000)
        #expect(e.decide(syn, at: t(1)) == Decision(.accept, .ipv4MappedSent))
        #expect(e.stats.flowEntries == 0)
        for flags in [synack, .rst, rstack] {
            let back = Self.v6(src: "::ffff:203.0.113.5", dst: "2001:db8:2::5", sport: 443, dport: 40001, flags: flags, seq: 9, ack: 1001)
            #expect(Engine.wouldQueue(back, policy: policy()))
            #expect(e.decide(back, at: t(1.1)) == Decision(.drop, .ipv4Mapped))
            #expect(e.decideObserved(back, at: t(1.1)) == Decision(.drop, .ipv4Mapped))
        }
        // Plain ACKs the handshake rules never queue.
        let ack = Self.v6(src: "::ffff:203.0.113.5", dst: "2001:db8:2::5", sport: 443, dport: 40001, flags: .ack)
        #expect(e.decideObserved(ack, at: t(1.2)) == Decision(.accept, .notQueued))
        #expect(e.drainAttackEvents().isEmpty)
        #expect(e.stats.flowEntries == 0)
    }

    /// A forged protected source from outside is dropped as such; the allowlist that exempts a
    /// drop is the IPv6 one only, as nft's `allowlist6`.
    @Test func spoofedSourceAndAllowlistFollowTheIPv6Sets() {
        let out = Self.v6(src: "2001:db8:2::5", dst: "::ffff:203.0.113.5", sport: 40001, dport: 443, flags: .syn)
        #expect(Engine(policy: policy(), seed: 1).decide(out, at: t(1), side: .outside) == Decision(.drop, .spoofedSource))
        let back = Self.v6(src: "::ffff:203.0.113.5", dst: "2001:db8:2::5", sport: 443, dport: 40001, flags: synack)
        let v4Allowed = Engine(policy: policy { $0.allowlist.insert(CIDR("203.0.113.0/24")!) }, seed: 1)
        #expect(v4Allowed.decide(back, at: t(1)) == Decision(.drop, .ipv4Mapped))
        let v6Allowed = Engine(policy: policy { $0.allowlist.insert(CIDR("::/80")!) }, seed: 1)
        #expect(v6Allowed.decide(back, at: t(1)) == Decision(.accept, .allowlisted))
    }

    /// A queued packet whose header the engine cannot read: to the alias of a protected IPv4
    /// host it is not that host's (before: `unreadable-header`, counted towards arming its
    /// /24); to a protected IPv6 host it is dropped.
    @Test func anUnreadableHeaderIsJudgedByTheIPv6SetsToo() {
        let e = Engine(policy: policy(), seed: 1)
        var p = Self.v6(src: "2001:db8:ff::7", dst: "::ffff:198.18.2.2", sport: 443, dport: 40000, flags: synack)
        p.hasTCP = false
        p.malformed = .extensionHeaderChainTooLong
        #expect(e.decide(p, at: t(1)) == Decision(.accept, .notProtected))
        p = Self.v6(src: "::ffff:203.0.113.5", dst: "2001:db8:2::5", sport: 443, dport: 40000, flags: synack)
        p.hasTCP = false
        p.malformed = .truncatedExtensionHeader
        #expect(e.decide(p, at: t(1)) == Decision(.drop, .ipv4Mapped))
        #expect(e.stats.count(.unreadableHeader) == 0)
    }
}
