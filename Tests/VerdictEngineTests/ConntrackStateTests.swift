import Testing
import PacketParser
@testable import VerdictEngine

/// `state = conntrack`: the engine learns the kernel's conntrack entries as facts and answers a
/// SYN-ACK from them; without state it leaves the SYN-ACK waiting (`state-awaited`) until the agent
/// settles it; while replication is stalled, `ct_miss` decides. `score` never sees conntrack.
@Suite struct ConntrackStateTests {
    static func engine(_ configure: (inout Policy) -> Void = { _ in }) -> Engine {
        Engine(policy: policy { p in p.stateSource = .conntrack; p.conntrackTableCapacity = 1024; configure(&p) }, seed: 7)
    }

    static func fact(_ kind: ConntrackFact.Kind = .present, _ state: ConntrackTCPState = .synSent,
                     src: String = client, sport: UInt16 = 40000, dst: String = server, dport: UInt16 = 443) -> ConntrackFact {
        ConntrackFact(kind, source: IPAddress(src)!, sourcePort: sport, destination: IPAddress(dst)!, destinationPort: dport, state: state)
    }

    static let answer = tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 900, ack: 12346)

    @Test(arguments: [ConntrackTCPState.synSent, .synRecv, .established, .synSent2])
    func aSynackAnsweringAnEntryIsSolicitedFromConntrack(_ state: ConntrackTCPState) {
        let e = Self.engine()
        e.learn(Self.fact(.present, state), at: t(1))
        let d = e.decide(Self.answer, at: t(1.001))
        #expect(d == Decision(.accept, .solicitedConntrack))
        #expect(e.stats.reasons[.solicitedConntrack] == 1)
    }

    @Test(arguments: [ConntrackTCPState.finWait, .closeWait, .lastAck, .timeWait, .close, .none])
    func closingOrClosedEntriesAnswerNothing(_ state: ConntrackTCPState) {
        let e = Self.engine()
        e.learn(Self.fact(.present, state), at: t(1))
        #expect(e.decide(Self.answer, at: t(1.001)).reason == .stateAwaited)
    }

    @Test func withoutStateTheSynackWaitsUntilItsEntryArrives() {
        let e = Self.engine()
        #expect(e.decide(Self.answer, at: t(1)) == Decision(.drop, .stateAwaited))
        // Not counted while it waits; settling again before the entry keeps it waiting.
        #expect(e.stats.decisions == 0)
        #expect(e.settle(Self.answer, at: t(1.0005), final: false).reason == .stateAwaited)
        e.learn(Self.fact(), at: t(1.001))
        #expect(e.settle(Self.answer, at: t(1.001), final: false) == Decision(.accept, .solicitedConntrack))
        #expect(e.stats.decisions == 1)
    }

    @Test func aWaitThatEndsWithoutStateIsUnsolicited() {
        let e = Self.engine()
        #expect(e.decide(Self.answer, at: t(1)).reason == .stateAwaited)
        #expect(e.settle(Self.answer, at: t(1.05), final: true) == Decision(.drop, .unsolicitedSynack))
        #expect(e.stats.reasons[.unsolicitedSynack] == 1)
    }

    @Test func theEntryMustBeOpenedByTheSynacksReceiver() {
        // An entry opened by the server (inbound connection) does not make a SYN-ACK to the
        // client solicited: that would be a SYN-ACK in the opener's own direction.
        let e = Self.engine()
        e.learn(Self.fact(src: server, sport: 443, dst: client, dport: 40000), at: t(1))
        #expect(e.decide(Self.answer, at: t(1.001)).reason == .stateAwaited)
    }

    @Test func destroyForgetsTheEntry() {
        let e = Self.engine()
        e.learn(Self.fact(), at: t(1))
        e.learn(Self.fact(.gone), at: t(2))
        #expect(e.decide(Self.answer, at: t(2.001)).reason == .stateAwaited)
        #expect(e.conntrackEntries == 0)
    }

    @Test func factsWithoutAProtectedEndAreIgnored() {
        let e = Self.engine()
        #expect(e.learn(Self.fact(src: "203.0.113.1", dst: server), at: t(1)) == false)
        #expect(e.conntrackEntries == 0)
        #expect(e.learn(Self.fact(), at: t(1)) == true)
    }

    @Test func whereTheAgentSawTheSynTheIsnStillDecides() {
        let e = Self.engine()
        _ = e.decide(tcp(src: client, dst: server, sport: 40000, dport: 443, flags: .syn, seq: 12345), at: t(1))
        e.learn(Self.fact(), at: t(1))
        // Wrong ack: conntrack knows the 4-tuple, but the agent knows the ISN.
        let wrong = tcp(src: server, dst: client, sport: 443, dport: 40000, flags: synack, seq: 900, ack: 999)
        #expect(e.decide(wrong, at: t(1.01)) == Decision(.drop, .unsolicitedSynack))
        #expect(e.decide(Self.answer, at: t(1.02)) == Decision(.accept, .solicitedSynack))
    }

    @Test(arguments: [ConntrackMiss.score, .drop, .accept])
    func whileReplicationIsStalledCtMissDecides(_ miss: ConntrackMiss) {
        let e = Self.engine { $0.conntrackMiss = miss }
        e.setReplicationHealthy(false)
        let d = e.decide(Self.answer, at: t(1))
        switch miss {
        case .score: #expect(d.reason == .synackScorePass || d.reason == .synackScoreDrop)
        case .drop: #expect(d == Decision(.drop, .unsolicitedSynack))
        case .accept: #expect(d == Decision(.accept, .conntrackMissAccepted))
        }
        // Replication back: waiting again, ct_miss plays no part.
        e.setReplicationHealthy(true)
        #expect(e.decide(Self.answer, at: t(2)).reason == .stateAwaited)
    }

    @Test func scoreNeverWaitsForConntrack() {
        // decideObserved judges captures, which carry no conntrack.
        let e = Self.engine()
        #expect(e.decideObserved(Self.answer, at: t(1)) == Decision(.drop, .unsolicitedSynack))
    }

    @Test func ipv6EntriesAnswerToo() {
        let e = Self.engine()
        e.learn(Self.fact(src: "2001:db8:2::2", dst: "2001:db8:ff::9"), at: t(1))
        let a = tcp(src: "2001:db8:ff::9", dst: "2001:db8:2::2", sport: 443, dport: 40000, flags: synack, seq: 1, ack: 2)
        #expect(e.decide(a, at: t(1.001)) == Decision(.accept, .solicitedConntrack))
    }

    @Test func theMirrorIsBounded() {
        let e = Self.engine { $0.conntrackTableCapacity = 64 }
        for i in 0..<5000 { e.learn(Self.fact(sport: UInt16(10000 + i)), at: t(Double(i) / 1000)) }
        #expect(e.conntrackEntries <= 64 + 64 / 8 + 16)
        #expect(e.conntrackEvictions > 0)
        // The newest are there.
        let newest = tcp(src: server, dst: client, sport: 443, dport: UInt16(10000 + 4999), flags: synack, seq: 1, ack: 2)
        #expect(e.decide(newest, at: t(5.1)).reason == .solicitedConntrack)
    }
}

@Suite struct HoldQueueTests {
    static func held(_ id: UInt32, _ at: Double) -> HoldQueue.Held {
        HoldQueue.Held(id: id, packet: ParsedPacket(), heldAt: t(at))
    }

    @Test func expiresOldestFirstAndKeepsTheFloor() {
        var q = HoldQueue(capacity: 8)
        for i in 0..<4 { #expect(q.hold(Self.held(UInt32(10 + i), Double(i) * 0.01)) == nil) }
        #expect(q.oldestID == 10)
        var out: [HoldQueue.Held] = []
        q.takeExpired(at: t(0.025), wait: t(0.01), into: &out)
        #expect(out.map { $0.id } == [10, 11])
        #expect(q.oldestID == 12)
        #expect(q.count == 2)
    }

    @Test func settledOnesLeaveFromAnywhere() {
        var q = HoldQueue(capacity: 8)
        for i in 0..<5 { _ = q.hold(Self.held(UInt32(i), 0)) }
        q.recheck { $0.id == 0 || $0.id == 3 }
        #expect(q.count == 3)
        #expect(q.oldestID == 1)
        var all: [HoldQueue.Held] = []
        q.takeAll(into: &all)
        #expect(all.map { $0.id } == [1, 2, 4])
        #expect(q.isEmpty && q.oldestID == nil)
    }

    @Test func aFullHoldGivesUpItsOldest() {
        var q = HoldQueue(capacity: 3)
        for i in 0..<3 { #expect(q.hold(Self.held(UInt32(i), 0)) == nil) }
        #expect(q.hold(Self.held(3, 0))?.id == 0)
        #expect(q.count == 3)
        #expect(q.oldestID == 1)
        // With holes: the next eviction still returns a live packet or none, never a hole twice.
        q.recheck { $0.id == 1 }
        #expect(q.hold(Self.held(4, 0)) == nil || q.count == 3)
        #expect(q.count == 3)
    }
}

@Suite struct ReplicationWatchTests {
    @Test func flowsStallOnlyWithUnmatchedSynacks() {
        var w = ReplicationWatch(start: t(0))
        #expect(w.evaluate(at: t(5)) == nil, "quiet with no SYN-ACKs is not a stall")
        w.unmatched(3)
        guard case .stalled(let why)? = w.evaluate(at: t(5)) else { Issue.record("no stall"); return }
        #expect(why.contains("3 SYN-ACKs"))
        #expect(!w.healthy)
        #expect(w.stateArrived(at: t(6)) == .restored(reason: "replicated conntrack state arrives again"))
        #expect(w.healthy && w.stalls == 1)
    }

    @Test func theSyncLinkDecidesWhenWatched() {
        var w = ReplicationWatch(start: t(0), watchesLink: true)
        _ = w.syncTraffic(at: t(1))
        #expect(w.evaluate(at: t(2.5)) == nil)
        guard case .stalled(let why)? = w.evaluate(at: t(3.1)) else { Issue.record("no stall"); return }
        #expect(why.contains("sync link"))
        // A replicated fact alone does not restore while the link stays silent...
        #expect(w.stateArrived(at: t(4)) == nil)
        // ...its traffic does.
        #expect(w.syncTraffic(at: t(4.5)) != nil)
        #expect(w.healthy)
    }
}
