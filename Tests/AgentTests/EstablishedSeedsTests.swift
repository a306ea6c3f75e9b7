#if canImport(Glibc)
import Glibc
#endif
import Lab
import NFQueue
import NFQueueTestSupport
import PacketParser
import Testing
import VerdictEngine
@testable import Agent

/// What the start takes from the conntrack table (ESTABLISHED TCP with a protected end, either
/// direction, bounded), and that a worker seeded before it runs judges those flows from its
/// first packet. No root: facts are built, the queue is scripted.
@Suite struct EstablishedSeedsTests {
    static let victim = IPAddress("198.18.2.2")!
    static let remote = IPAddress("203.0.113.5")!

    static func policy() -> Policy {
        var p = Policy()
        p.protected.insert(CIDR("198.18.2.0/24")!)
        p.trackFullPorts = [179...179]
        return p
    }

    static func fact(_ src: IPAddress, _ sport: UInt16, _ dst: IPAddress, _ dport: UInt16,
                     _ state: ConntrackTCPState = .established, _ kind: ConntrackFact.Kind = .present) -> ConntrackFact {
        ConntrackFact(kind, source: src, sourcePort: sport, destination: dst, destinationPort: dport, state: state)
    }

    @Test func establishedFlowsWithAProtectedEndAreTakenUpToTheLimit() {
        let p = Self.policy()
        var s = EstablishedSeeds()
        // Opened by the protected host, and towards it: the protected end is named either way.
        s.take(Self.fact(Self.victim, 40000, Self.remote, 179), policy: p, limit: 3)
        s.take(Self.fact(Self.remote, 50000, Self.victim, 22), policy: p, limit: 3)
        // Not established, gone, or with no protected end: nothing to seed.
        s.take(Self.fact(Self.victim, 40001, Self.remote, 179, .synSent), policy: p, limit: 3)
        s.take(Self.fact(Self.victim, 40002, Self.remote, 179, .timeWait), policy: p, limit: 3)
        s.take(Self.fact(Self.victim, 40003, Self.remote, 179, .established, .gone), policy: p, limit: 3)
        s.take(Self.fact(Self.remote, 1, IPAddress("198.51.100.1")!, 2), policy: p, limit: 3)
        #expect(s.flows == [
            EstablishedSeeds.Flow(protectedEnd: Self.victim, port: 40000, peer: Self.remote, peerPort: 179),
            EstablishedSeeds.Flow(protectedEnd: Self.victim, port: 22, peer: Self.remote, peerPort: 50000),
        ])
        for port in UInt16(41000)..<41005 { s.take(Self.fact(Self.victim, port, Self.remote, 443), policy: p, limit: 3) }
        #expect(s.flows.count == 3 && s.established == 7 && s.capped == 4)
        var small = Policy()
        small.synTableCapacity = 1 << 20
        #expect(EstablishedSeeds.limit(small) == 1 << 18)
    }

    /// A blind reset aimed at a seeded guarded session is dropped from the worker's first
    /// packet; the same on a session nobody seeded meets the untracked budget and passes.
    @Test func aWorkerSeededBeforeItRunsJudgesTheSeededFlowsFirstPacket() {
        func rst(_ id: UInt32, to port: UInt16) -> PacketMessage {
            let spec = FrameSpec(source: Self.remote, destination: Self.victim, sourcePort: 179, destinationPort: port,
                                 flags: .rst, sequence: 0x8000_0000)
            return PacketMessage(id: id, payload: FrameBuilder.frame(spec, link: .raw))
        }
        let logger = Logger(level: .error)
        let enforcement = KernelEnforcement(logger: logger, timeout: 60, queueCount: 1, dryRun: false, arm: { _, _, _ in })
        let shared = AgentShared(settings: AgentSettings(), policy: Self.policy(), logger: logger, enforcement: enforcement)
        let transport = ScriptedTransport(QueueConfiguration(queue: 0), script: [[rst(1, to: 40000), rst(2, to: 40001)]])
        transport.whenScriptEnds = { shared.stop() }
        let worker = Worker(queue: 0, shared: shared, seed: 1)
        let seeded = worker.seedEstablished([EstablishedSeeds.Flow(protectedEnd: Self.victim, port: 40000, peer: Self.remote, peerPort: 179)],
                                            at: monotonicNanoseconds())
        #expect(seeded == 1)
        worker.run(transport)
        #expect(transport.kernel.verdict(1) == false)
        #expect(transport.kernel.verdict(2) == true)
        #expect(worker.counters.value(WorkerCounter.slot(.rstUnverified, .drop)) == 1)
    }
}

extension EstablishedSeedsTests {
    /// A dump that fails part-way (an overrun, a timeout) keeps what it read and says why; one
    /// that cannot start keeps nothing and says why; the metrics say it too.
    @Test func aDumpThatFailsIsSaidAndKeepsWhatItRead() {
        let p = Self.policy()
        let partial = EstablishedSeeds.read(policy: p, limit: 10) { (body) throws(SystemCallError) in
            body(Self.fact(Self.victim, 40000, Self.remote, 179))
            throw SystemCallError("ctnetlink dump", errno: ENOBUFS)
        }
        #expect(partial.flows.count == 1)
        #expect(partial.failure?.contains("ctnetlink dump") == true)
        let none = EstablishedSeeds.read(policy: p, limit: 10) { (_) throws(SystemCallError) in
            throw SystemCallError("socket(ctnetlink)", errno: EPROTONOSUPPORT)
        }
        #expect(none.flows.isEmpty && none.failure != nil)
        let ok = EstablishedSeeds.read(policy: p, limit: 10) { (_) throws(SystemCallError) in }
        #expect(ok.failure == nil && ok.entries == 0)

        let logger = Logger(level: .error)
        let enforcement = KernelEnforcement(logger: logger, timeout: 60, queueCount: 1, dryRun: false, arm: { _, _, _ in })
        let watchdog = RulesWatchdog(logger: logger, repair: false, missing: { .present }, reapply: {})
        let text = MetricsRegistry(workers: [], enforcement: enforcement, watchdog: watchdog, dryRun: false,
                                   seeds: SeedFigures(seeded: 0, capped: 0, successful: false)).render()
        #expect(text.contains("\nreflectguard_ct_seed_successful 0\n"))
        #expect(text.contains("\nreflectguard_ct_seeded_flows 0\n"))
    }
}
