import Dispatch
import Synchronization

/// The mutable state of an agent part that works beside the packet path on its own serial
/// dispatch queue (kernel enforcement, the Flowspec escalation, the rules watchdog, the XDP
/// path): only the queue's work items and its timer get the state, `inout`, under a `Mutex` that
/// is never contended (the queue runs one item at a time). So the compiler, not a comment saying
/// "touched on the queue only", checks that no other thread reaches it, and the part itself is
/// plainly `Sendable`.
final class SerialState<State: ~Copyable>: Sendable {
    private let queue: DispatchQueue
    private let state: Mutex<State>
    private let timer = Mutex<DispatchSourceTimer?>(nil)

    init(label: String, _ initial: consuming sending State) {
        queue = DispatchQueue(label: label)
        state = Mutex(initial)
    }

    /// Runs `body` on the queue after everything enqueued before it; returns at once.
    func async(_ body: @escaping @Sendable (inout State) -> Void) {
        queue.async { self.run(body) }
    }

    /// Runs `body` on the queue and waits for it: everything enqueued before has run.
    func sync<R: Sendable>(_ body: @Sendable (inout State) -> R) -> R {
        queue.sync { state.withLock { body(&$0) } }
    }

    /// Runs `body` on the queue every `period` seconds, the first time after `delay`. Not at
    /// init: the timer's threads would be the agent's first, and the agent must still be
    /// single-threaded when it drops its capabilities (each thread keeps its own).
    func every(_ period: Double, after delay: Double, _ body: @escaping @Sendable (inout State) -> Void) {
        timer.withLock { timer in
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.schedule(deadline: .now() + delay, repeating: period)
            t.setEventHandler { [weak self] in self?.run(body) }
            t.resume()
            timer = t
        }
    }

    private func run(_ body: @Sendable (inout State) -> Void) {
        state.withLock { body(&$0) }
    }

    /// Stops the timer, then runs `last` on the queue and waits: what was enqueued before has run
    /// by then, and a tick that was already due runs before `last` too.
    func stop(_ last: @Sendable (inout State) -> Void = { _ in }) {
        timer.withLock { t in
            t?.cancel()
            t = nil
        }
        sync(last)
    }
}
