import Synchronization
import VerdictEngine

/// Counters written by exactly one worker thread and read by the metrics endpoint. The writer does
/// a relaxed load and store (no locked instruction on the hot path: there is a single writer);
/// readers do relaxed loads. A metrics scrape may see a count a few packets old, never a torn one.
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
        reasonBase + ReasonIndex.of(reason) * 2 + (verdict == .drop ? 1 : 0)
    }

    public static var slotCount: Int { reasonBase + Reason.allCases.count * 2 }
}

/// Reason → dense index without hashing a string-backed enum per packet.
enum ReasonIndex {
    /// A payload-free enum is stored as its case's declaration index; `Reason.allCases` lists the
    /// cases in that order. Checked once at start (`verify`), so a compiler change cannot
    /// silently mix the counters up.
    @inline(__always)
    static func of(_ r: Reason) -> Int { Int(unsafeBitCast(r, to: UInt8.self)) }

    static func verify() -> Bool {
        MemoryLayout<Reason>.size == 1
            && Reason.allCases.enumerated().allSatisfy { of($0.element) == $0.offset }
    }
}
