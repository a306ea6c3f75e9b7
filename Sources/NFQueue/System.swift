#if canImport(Glibc)
import Glibc
#endif

/// A failed system or library call, naming the call (swift-nio's `IOError` shape).
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// What a non-blocking call can give back besides a value.
public enum IOResult<T> {
    case processed(T)
    /// EAGAIN/EWOULDBLOCK: nothing there right now (or the receive timeout passed). A state, not
    /// an error.
    case wouldBlock
}

/// The one wrapper every system call of this target goes through: retries EINTR, reports EAGAIN
/// as a state, traps on EBADF/EFAULT (those are bugs in this program, not conditions to handle),
/// and throws a typed error naming the call for everything else.
@inline(__always)
public func syscall<T: FixedWidthInteger>(_ name: @autoclosure () -> String,
                                   _ body: () -> T) throws(SystemCallError) -> IOResult<T> {
    while true {
        let r = body()
        if r >= 0 { return .processed(r) }
        let e = Glibc.errno
        switch e {
        case EINTR: continue
        case EAGAIN, EWOULDBLOCK: return .wouldBlock
        case EBADF, EFAULT: fatalError("\(name()): \(String(cString: strerror(e))): a bug, not a condition")
        default: throw SystemCallError(name(), errno: e)
        }
    }
}

/// For calls that never legitimately return EAGAIN (setsockopt, bind): the value or a throw.
@inline(__always)
func syscallValue<T: FixedWidthInteger>(_ name: @autoclosure () -> String,
                                        _ body: () -> T) throws(SystemCallError) -> T {
    switch try syscall(name(), body) {
    case .processed(let v): return v
    case .wouldBlock: throw SystemCallError(name(), errno: EAGAIN)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the engine's time when the kernel sends no timestamp.
@inline(__always)
public func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
}

/// CLOCK_REALTIME in nanoseconds: the kernel's NFQA_TIMESTAMP is on this clock.
@inline(__always)
public func realtimeNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
}
