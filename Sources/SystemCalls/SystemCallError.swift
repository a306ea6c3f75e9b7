#if canImport(Glibc)
import Glibc
#endif

/// A failed system or library call, naming the call (swift-nio's `IOError` shape): what was
/// called, on what, and the errno it left. Built out of line, only on the failure path.
public struct SystemCallError: Error, CustomStringConvertible, Sendable, Equatable {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// strerror's text, e.g. "No buffer space available".
    public var reason: String { String(cString: strerror(errno)) }

    public var description: String { "\(call): \(reason) (errno \(errno))" }
}

/// What a non-blocking call can give back besides a value.
public enum IOResult<T> {
    case processed(T)
    /// EAGAIN/EWOULDBLOCK: nothing there right now (or the receive timeout passed). A state, not
    /// an error.
    case wouldBlock

    public func map<U>(_ f: (T) -> U) -> IOResult<U> {
        switch self {
        case .processed(let v): return .processed(f(v))
        case .wouldBlock: return .wouldBlock
        }
    }
}

extension IOResult: Sendable where T: Sendable {}
extension IOResult: Equatable where T: Equatable {}
