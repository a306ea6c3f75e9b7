#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The system-call seam for tests, in swift-system's manner (`Internals/Mocking.swift`): a driver
/// bound to the current task or thread sees every call that goes through `syscall` and its
/// siblings, records its name in `trace`, and may answer in the call's place with a forced errno
/// (the real call then does not run). Only debug builds consult it (ENABLE_MOCKING); in a release
/// build the wrappers call straight through and `isCompiledIn` is false.
///
///     let mock = SystemCallMock()
///     mock.force(EINTR, on: "recvmmsg", times: 2)
///     try mock.run { try receiver.receive(wait: false) }
///     #expect(mock.trace.filter { $0.hasPrefix("recvmmsg") }.count == 3)
public final class SystemCallMock: Sendable {
    private struct State {
        var trace: [String] = []
        /// Name prefix → errnos still to answer with, first first.
        var forced: [(prefix: String, errnos: [Int32])] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Whether the wrappers consult a driver at all (debug builds).
    public static var isCompiledIn: Bool {
        #if ENABLE_MOCKING
        return true
        #else
        return false
        #endif
    }

    @TaskLocal static var current: SystemCallMock?

    /// Runs `body` with this driver seeing the calls made on the current task or thread.
    public func run<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = Self.$current.withValue(self) {
            do throws(E) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// The next `times` calls whose name starts with `prefix` fail with `errno` without running.
    public func force(_ errno: Int32, on prefix: String, times: Int = 1) {
        state.withLock { s in
            if let i = s.forced.firstIndex(where: { $0.prefix == prefix }) {
                s.forced[i].errnos += Array(repeating: errno, count: times)
            } else {
                s.forced.append((prefix, Array(repeating: errno, count: times)))
            }
        }
    }

    /// The names of the calls made so far, in order (forced ones included).
    public var trace: [String] { state.withLock { $0.trace } }

    /// Records the call; returns the errno to fail it with, nil to let it run.
    @usableFromInline
    static func intercept(_ name: () -> String) -> Int32? {
        guard let driver = current else { return nil }
        let call = name()
        return driver.state.withLock { s -> Int32? in
            s.trace.append(call)
            guard let i = s.forced.firstIndex(where: { call.hasPrefix($0.prefix) && !$0.errnos.isEmpty }) else { return nil }
            return s.forced[i].errnos.removeFirst()
        }
    }
}
