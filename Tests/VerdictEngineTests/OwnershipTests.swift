import Testing
import PacketParser
@testable import VerdictEngine
import TestSupport

/// The engine's memory has one owner per buffer (`OwnedBuffer`, `~Copyable`): the compiler rules
/// out copies and hand frees, and these tests check the rest at run time with the allocation
/// ledger (a task-local record of every `OwnedBuffer` allocated and freed): a policy swap frees
/// exactly what it replaces, once, and an engine's end frees everything it allocated, once.
@Suite struct OwnershipTests {
    static let first = policy(["198.18.2.0/24", "2001:db8:2::/64"]) { $0.allowlist.insert(CIDR("203.0.113.9")!) }
    static let second = policy(["198.18.0.0/16", "192.0.2.0/24", "2001:db8::/32"]) {
        $0.trackFullHosts.insert(CIDR("198.18.2.7")!)
        $0.trackFullPorts = [179...179]
    }

    /// Buffers a policy change replaces: three matchers (IPv4 and other lanes each) and the
    /// per-network RST budgets.
    static let replacedPerSwap = 3 * 2 + 1

    @Test func policySwapsAndDeinitReleaseEveryBufferExactlyOnce() {
        let ledger = AllocationLedger()
        AllocationLedger.$current.withValue(ledger) {
            do {
                let e = Engine(policy: Self.first, seed: 7)
                let born = ledger.counts
                #expect(born.allocations > 0 && born.live == born.allocations && born.frees == 0)
                let swaps = 40
                for k in 0..<swaps {
                    e.updatePolicy(k % 2 == 0 ? Self.second : Self.first)
                    // Packets between swaps read the new matchers (a freed one would crash under ASan,
                    // or answer from garbage).
                    let d = e.decide(tcp(src: client, dst: server, sport: UInt16(40000 + k), dport: 443, flags: .syn,
                                         seq: UInt32(k)), at: t(Double(k)))
                    #expect(d == Decision(.accept, .synTracked))
                }
                let swapped = ledger.counts
                #expect(swapped.live == born.live, "swaps neither leak nor free what is still in use")
                #expect(swapped.frees == swaps * Self.replacedPerSwap)
                #expect(swapped.allocations == born.allocations + swaps * Self.replacedPerSwap)
                #expect(swapped.strayFrees == 0)
                #expect(e.stats.reasons[.synTracked] == UInt64(swaps))
            }
            let end = ledger.counts
            #expect(end.live == 0, "the engine's end freed every buffer it owned")
            #expect(end.frees == end.allocations)
            #expect(end.strayFrees == 0, "no buffer freed twice")
        }
    }

    /// The ledger itself notices a double free and a leak (so the test above can fail).
    @Test func ledgerCountsStrayFreesAndLeaks() {
        let ledger = AllocationLedger()
        let p = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        defer { p.deallocate() }
        ledger.allocated(p)
        #expect(ledger.counts.live == 1)
        ledger.freed(p)
        ledger.freed(p)
        #expect(ledger.counts == AllocationLedger.Counts(allocations: 1, frees: 2, strayFrees: 1, live: 0))
    }

    @Test func holdQueueFreesItsRingOnce() {
        let ledger = AllocationLedger()
        AllocationLedger.$current.withValue(ledger) {
            do {
                var q = HoldQueue(capacity: 4)
                for k in 0..<6 { _ = q.hold(HoldQueue.Held(id: UInt32(k), packet: ParsedPacket(), heldAt: t(Double(k)))) }
                #expect(q.count == 4)
                #expect(ledger.counts.live == 1)
            }
            #expect(ledger.counts == AllocationLedger.Counts(allocations: 1, frees: 1, strayFrees: 0, live: 0))
        }
    }

    /// `Reason.ordinal` is the one dense index of a reason (engine, scoring and agent counters):
    /// declaration order, every case, nothing past `ordinalCount`.
    @Test func reasonOrdinalIsDeclarationOrder() {
        #expect(Reason.ordinalCount == Reason.allCases.count)
        for (i, r) in Reason.allCases.enumerated() { #expect(r.ordinal == i, "\(r)") }
    }

    /// The queue predicate is written once (`Engine.queues`): a fresh engine's `wouldQueue` and
    /// whether `decideObserved` calls the same packet `not-queued` agree on every generated
    /// packet, and without the learn rule (packets the protected side does not send) so does
    /// `wouldQueue(_:policy:)`.
    @Test(arguments: [Track.handshake, .full], [false, true])
    func onePredicateForEveryQueueQuestion(track: Track, guards: Bool) {
        let p = policy { $0.track = track; if guards { $0.trackFullPorts = [179...179, 8000...8100] } }
        var g = SplitMix(state: 41)
        let flagSets: [TCPFlags] = [.syn, synack, .rst, rstack, .ack, [.ack, .psh], [.fin, .ack], [.syn, .rst]]
        let hosts = [client, "198.18.2.77", server, "203.0.113.5", "2001:db8:2::9", "2001:db8:9::1"]
        for k in 0..<600 {
            var src = hosts[Int(g.next() % UInt64(hosts.count))]
            var dst = hosts[Int(g.next() % UInt64(hosts.count))]
            if src.contains(":") != dst.contains(":") { (src, dst) = (client, server) }
            let ports: [UInt16] = [179, 443, 8050, 40000]
            let packet = tcp(src: src, dst: dst, sport: ports[Int(g.next() % 4)], dport: ports[Int(g.next() % 4)],
                             flags: flagSets[k % flagSets.count], seq: UInt32(truncatingIfNeeded: g.next()))
            let queued = Engine(policy: p, seed: 1).wouldQueue(packet, at: t(1))
            let d = Engine(policy: p, seed: 1).decideObserved(packet, at: t(1))
            let protectedEnd = p.protected.contains(packet.source) || p.protected.contains(packet.destination)
            if protectedEnd { #expect((d.reason == .notQueued) == !queued, "\(src) → \(dst) \(packet.flags)") }
            else { #expect(!queued && d.reason == .notProtected) }
            if !p.protected.contains(packet.source) {
                #expect(Engine.wouldQueue(packet, policy: p) == queued, "\(src) → \(dst) \(packet.flags)")
            }
        }
    }
}
