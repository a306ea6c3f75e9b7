#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VerdictEngine

/// Counters written by exactly one worker thread and read by the metrics endpoint. The writer does
/// a relaxed load and store (no locked instruction on the hot path: there is a single writer);
/// readers do relaxed loads. A metrics scrape may see a count a few packets old, never a torn one.
///
/// `@unchecked Sendable`, and why that holds: the only stored properties are `count` (immutable)
/// and `slots`, an immutable pointer to `count` `Atomic<UInt64>`s initialised in `init` and freed
/// in `deinit` only, so every access from any thread is an atomic operation. (A class cannot hold
/// a variable number of `Atomic`s any other way: `Atomic` is `~Copyable`, arrays need copies.)
/// What the type system cannot see is the single-writer rule of `add`, which is about counts
/// lost, not memory safety: a second writer could lose an increment, never tear a value.
public final class CounterBlock: @unchecked Sendable {
    private let slots: UnsafeMutablePointer<Atomic<UInt64>>
    public let count: Int

    public init(count: Int) {
        self.count = count
        slots = .allocate(capacity: count)
        for i in 0..<count { (slots + i).initialize(to: Atomic(0)) }
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
    }

    /// Single-writer increment: only the owning worker calls this.
    @inline(__always)
    public func add(_ index: Int, _ n: UInt64 = 1) {
        let p = slots + index
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Single-writer set (gauges and figures copied from elsewhere).
    @inline(__always)
    public func set(_ index: Int, _ v: UInt64) {
        slots[index].store(v, ordering: .relaxed)
    }

    public func value(_ index: Int) -> UInt64 { slots[index].load(ordering: .relaxed) }

    /// An increment from any thread (a locked add): for counters off the packet path.
    public func addShared(_ index: Int, _ n: UInt64 = 1) {
        slots[index].wrappingAdd(n, ordering: .relaxed)
    }
}

/// The named counters and gauges of one part of the agent, one slot per case of `Key` (as
/// `WorkerCounter` names a worker's): written from any thread, read by the metrics thread.
final class Tally<Key: RawRepresentable & CaseIterable>: Sendable where Key.RawValue == Int {
    private let block = CounterBlock(count: Key.allCases.count)

    init() {}

    func add(_ key: Key, _ n: UInt64 = 1) { block.addShared(key.rawValue, n) }
    func set(_ key: Key, _ value: UInt64) { block.set(key.rawValue, value) }
    subscript(_ key: Key) -> UInt64 { block.value(key.rawValue) }
}

/// What each worker counts. The per-reason verdict counters follow these fixed slots.
public enum WorkerCounter: Int, CaseIterable {
    case received
    case accepted
    case dropped
    /// Verdicts the engine gave `drop` that were accepted because of --dry-run.
    case wouldDrop
    case truncated
    case enobufs
    case netlinkErrors
    case verdictSendErrors
    /// Verdicts lost because their send failed twice (those packets fail open or stay queued).
    case lostVerdicts
    /// Packet messages that did not decode but had a readable id: accepted unjudged.
    case undecoded
    case receiveCalls
    case sendCalls
    case attackEvents
    /// Times the queue stayed backlogged past the overload limit (reported at most once a second).
    case overloads
    // Gauges published from the engine by its own worker.
    case tableOccupancy
    case tableCapacity
    case tableEvictions
    case bucketEvictions
    case activeAttacks
    case rstAttacksStarted

    public static var reasonBase: Int { allCases.count }

    /// Slot of (reason, verdict): two per reason.
    @inline(__always)
    public static func slot(_ reason: Reason, _ verdict: Verdict) -> Int {
        reasonBase + reason.ordinal * 2 + (verdict == .drop ? 1 : 0)
    }

    public static var slotCount: Int { reasonBase + Reason.ordinalCount * 2 }
}

/// SIGHUP reloads, for /metrics: the agent's main thread writes, the metrics thread reads.
public final class ReloadCounters: Sendable {
    let attempts = Atomic<UInt64>(0)
    let failures = Atomic<UInt64>(0)
    /// Wall-clock time of the last rules load that took, in ms since the epoch: the start's
    /// until the first reload (Prometheus's own config reload metrics count the same way).
    let lastSuccessMilliseconds = Atomic<UInt64>(ReloadCounters.nowMilliseconds())
    let lastSucceeded = Atomic<Bool>(true)

    public init() {}

    func record(success: Bool) {
        attempts.add(1, ordering: .relaxed)
        lastSucceeded.store(success, ordering: .relaxed)
        if success {
            lastSuccessMilliseconds.store(Self.nowMilliseconds(), ordering: .relaxed)
        } else {
            failures.add(1, ordering: .relaxed)
        }
    }

    static func nowMilliseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return UInt64(t.tv_sec) * 1000 + UInt64(t.tv_nsec) / 1_000_000
    }
}
