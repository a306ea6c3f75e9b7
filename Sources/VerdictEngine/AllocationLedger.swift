import Synchronization

/// A record of the `OwnedBuffer`s allocated and freed while it is the task's `current` ledger:
/// tests run an engine's life inside `AllocationLedger.$current.withValue(ledger) { … }` and check
/// that every allocation was freed exactly once (policy swaps, deinit). Task-local, so tests
/// running in parallel never see each other's buffers; outside such a scope (production) the
/// only cost is one task-local read per allocation and per free, and the engine allocates only
/// at start and on a policy change.
final class AllocationLedger: Sendable {
    @TaskLocal static var current: AllocationLedger?

    struct Counts: Equatable {
        var allocations = 0
        var frees = 0
        /// Frees of an address not allocated (or already freed) under this ledger: a double free.
        var strayFrees = 0
        /// Allocated and not freed yet.
        var live = 0
    }

    private let state = Mutex<(counts: Counts, live: Set<UInt>)>((Counts(), []))

    func allocated(_ p: UnsafeRawPointer) {
        state.withLock { s in
            s.counts.allocations += 1
            s.live.insert(UInt(bitPattern: p))
            s.counts.live = s.live.count
        }
    }

    func freed(_ p: UnsafeRawPointer) {
        state.withLock { s in
            s.counts.frees += 1
            if s.live.remove(UInt(bitPattern: p)) == nil { s.counts.strayFrees += 1 }
            s.counts.live = s.live.count
        }
    }

    var counts: Counts { state.withLock { $0.counts } }
}
