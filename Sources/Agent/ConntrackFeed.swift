#if canImport(Glibc)
import Glibc
#endif
import Conntrack
import NFQueue
import Synchronization
import VerdictEngine

/// Conntrack facts on their way to one worker: the feed appends and wakes the worker through an
/// eventfd; the worker takes them all at once between receive batches (a lock per batch, never
/// per packet), and its engine learns them on its own thread.
final class ConntrackMailbox: Sendable {
    private let box = Mutex<[ConntrackFact]>([])
    /// Facts dropped because the worker fell this far behind (the mailbox is bounded).
    let dropped = Atomic<UInt64>(0)
    private let wakeup: Wakeup
    var eventFD: Int32 { wakeup.fd }
    static let limit = 1 << 18

    init() throws(SystemCallError) {
        wakeup = try Wakeup()
    }

    /// Whether facts wait (one relaxed load: the worker checks it after every batch).
    var hasFacts: Bool { waiting.load(ordering: .acquiring) }
    private let waiting = Atomic<Bool>(false)

    func post(_ facts: [ConntrackFact]) {
        guard !facts.isEmpty else { return }
        let lost = box.withLock { b -> Int in
            let room = Self.limit - b.count
            b.append(contentsOf: facts.prefix(max(0, room)))
            waiting.store(true, ordering: .releasing)
            return max(0, facts.count - room)
        }
        if lost > 0 { dropped.add(UInt64(lost), ordering: .relaxed) }
        wakeup.signal()
    }

    /// Everything posted since the last call.
    func take() -> [ConntrackFact] {
        wakeup.clear()
        return box.withLock { b in
            let out = b
            b.removeAll(keepingCapacity: true)
            waiting.store(false, ordering: .releasing)
            return out
        }
    }
}

/// `state = conntrack`: reads the kernel's conntrack table through ctnetlink (a dump at start,
/// then NEW / UPDATE / DESTROY events; ENOBUFS counted and answered with a fresh dump), hands
/// every TCP fact with a protected end to each worker's mailbox, and watches replication
/// (`ReplicationWatch`): while it is stalled the engines give `ct_miss` to SYN-ACKs without state.
/// Not `Sendable`: it lives on its own thread; the metrics thread reads its `figures` only.
final class ConntrackFeed {
    /// What the feed counts (`FeedCounter`) and the replication verdict, for the metrics thread.
    final class Figures: Sendable {
        let counts = Tally<FeedCounter>()
        private let shared: AgentShared
        init(_ shared: AgentShared) { self.shared = shared }
        var replicationHealthy: Bool { shared.replicationHealthy.load(ordering: .relaxed) }
    }
    let figures: Figures
    private var counts: Tally<FeedCounter> { figures.counts }
    private let shared: AgentShared
    private let mailboxes: [ConntrackMailbox]
    private let events: ConntrackSocket
    private var watch: ReplicationWatch

    private var unmatchedSeen: UInt64 = 0
    /// The sync link watched (`ct_sync_iface`, fixed at start) and its last receive count.
    private let syncInterface: String?
    private var syncPackets: UInt64? = nil

    /// Opens the event socket (before the rules go in, so a start that cannot read conntrack
    /// fails with the kernel untouched).
    init(shared: AgentShared, mailboxes: [ConntrackMailbox]) throws(SystemCallError) {
        self.shared = shared
        figures = Figures(shared)
        self.mailboxes = mailboxes
        events = try ConntrackSocket(events: true)
        syncInterface = shared.currentPolicy().0.conntrackSyncInterface
        watch = ReplicationWatch(start: monotonicNanoseconds(), watchesLink: syncInterface != nil)
        if let i = syncInterface, Self.receivedPackets(i) == nil {
            shared.logger.warning("conntrack-not-ready", [("detail", .string("ct_sync_iface '\(i)' has no receive counter here: replication will read as stalled until it exists"))])
        }
    }

    func run() {
        // Subscribed first, then the dump: an entry made in between arrives either way.
        dumpAll(reason: "start")
        var batch: [ConntrackFact] = []
        batch.reserveCapacity(4096)
        var lastEvaluate: Int64 = 0
        while !shared.stopping {
            var p = pollfd(fd: events.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
            var rounds = 0
            reading: while rounds < 64 {
                rounds += 1
                let r: ConntrackSocket.Received
                do throws(SystemCallError) { r = try events.receive { batch.append($0) } } catch {
                    shared.logger.error("conntrack-receive-error", [("error", .string("\(error)"))])
                    usleep(10_000)
                    break reading
                }
                switch r {
                case .messages(let n): counts.add(.events, UInt64(n))
                case .wouldBlock, .dumpEnded: break reading
                case .overrun:
                    counts.add(.overruns)
                    deliver(&batch)
                    dumpAll(reason: "events lost (ENOBUFS)")
                }
            }
            deliver(&batch)
            let now = monotonicNanoseconds()
            if now - lastEvaluate >= 100_000_000 {
                lastEvaluate = now
                evaluate(now)
            }
            counts.set(.malformed, UInt64(events.malformed))
        }
        events.close()
    }

    /// Hands facts to every worker (each engine mirrors the table: the kernel's queue hash is not
    /// ours to compute) and notes those of outbound flows for the watch.
    private func deliver(_ batch: inout [ConntrackFact]) {
        guard !batch.isEmpty else { return }
        let (policy, _) = shared.currentPolicy()
        var relevant: [ConntrackFact] = []
        relevant.reserveCapacity(batch.count)
        var outbound = false
        for f in batch {
            let opener = policy.protected.contains(f.source)
            guard opener || policy.protected.contains(f.destination) else { continue }
            if opener { outbound = true }
            relevant.append(f)
        }
        batch.removeAll(keepingCapacity: true)
        counts.add(.facts, UInt64(relevant.count))
        for m in mailboxes { m.post(relevant) }
        if outbound, let change = watch.stateArrived(at: monotonicNanoseconds()) { report(change) }
    }

    private func evaluate(_ now: Int64) {
        let u = shared.conntrackUnmatched.load(ordering: .relaxed)
        watch.unmatched(u &- unmatchedSeen)
        unmatchedSeen = u
        if let syncInterface, let n = Self.receivedPackets(syncInterface) {
            if let last = syncPackets, n != last, let change = watch.syncTraffic(at: now) { report(change) }
            syncPackets = n
        }
        if let change = watch.evaluate(at: now) { report(change) }
    }

    private func report(_ change: ReplicationWatch.Change) {
        let miss = shared.currentPolicy().0.conntrackMiss.rawValue
        switch change {
        case .stalled(let reason):
            shared.replicationHealthy.store(false, ordering: .releasing)
            counts.add(.stalls)
            shared.logger.warning("replication-stalled", [("reason", .string(reason)), ("ct_miss", .string(miss)),
                                                          ("fallback", .string("SYN-ACKs without state get ct_miss = \(miss) until replicated state arrives again"))])
        case .restored(let reason):
            shared.replicationHealthy.store(true, ordering: .releasing)
            shared.logger.info("replication-restored", [("reason", .string(reason))])
        }
    }

    /// The interface's receive counter (sysfs of this network namespace), nil if it has none.
    static func receivedPackets(_ interface: String) -> UInt64? {
        guard !interface.contains("/") else { return nil }
        return ProcFiles.number(in: "/sys/class/net/\(interface)/statistics/rx_packets")
    }

    /// A whole dump on its own socket, handed on like events. A failed dump is reported and
    /// retried on the next loss; the events keep flowing meanwhile.
    private func dumpAll(reason: String) {
        var facts: [ConntrackFact] = []
        do throws(SystemCallError) {
            _ = try ConntrackSocket.dumpTable { facts.append($0) }
            counts.add(.dumps)
            let n = facts.count
            deliver(&facts)
            shared.logger.info("conntrack-dump", [("reason", .string(reason)), ("tcp_entries", .from(n))])
        } catch {
            counts.add(.dumpFailures)
            deliver(&facts)
            shared.logger.error("conntrack-dump-failed", [("reason", .string(reason)), ("error", .string("\(error)"))])
        }
    }
}

/// What the conntrack feed counts (`reflectguard_ct_*`).
enum FeedCounter: Int, CaseIterable {
    /// ctnetlink messages read, events and dump replies.
    case events
    /// Facts of TCP flows with a protected end handed to the engines.
    case facts
    /// ENOBUFS on the event socket (each starts a re-dump).
    case overruns
    case dumps
    case dumpFailures
    /// Messages that did not parse (a gauge copied from the socket).
    case malformed
    /// Times replication was found stalled.
    case stalls
}

/// What each worker counts about held SYN-ACKs (`state = conntrack`), beside its `WorkerCounter`s.
enum HoldCounter: Int, CaseIterable {
    /// SYN-ACKs held for their state.
    case held
    /// Held ones whose state arrived while they waited (accepted).
    case matched
    /// Held ones whose wait ended without state.
    case expired
    /// Held ones settled early to make room (the holding budget was full).
    case budget
    /// Held now (gauge).
    case holding
    /// Sum of the waits of settled ones, in nanoseconds.
    case waitSumNanoseconds
    /// Conntrack entries mirrored by this worker's engine (gauge), and evicted for room.
    case entries
    case evictions
    /// Facts the feed could not post because this worker fell behind.
    case mailboxDropped
    // Then one slot per wait bucket (`waitBuckets`), not cumulative.

    /// Upper bounds of the wait histogram, seconds: replication's p50 (0.4 ms) to the largest
    /// ct_wait (1 s).
    static let waitBuckets: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1]
    static var bucketBase: Int { allCases.count }
    static var slotCount: Int { bucketBase + waitBuckets.count + 1 }

    static func bucket(_ waitedNanoseconds: Int64) -> Int {
        let s = Double(waitedNanoseconds) / 1e9
        return bucketBase + (waitBuckets.firstIndex { s <= $0 } ?? waitBuckets.count)
    }
}
