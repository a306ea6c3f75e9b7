#if canImport(Glibc)
import Glibc
#endif

// The one wrapper every system call of the agent goes through (swift-nio's NIOPosix/System.swift
// discipline): EINTR is retried, EAGAIN/EWOULDBLOCK comes back as `.wouldBlock`, EBADF and EFAULT
// trap (a closed or wild descriptor or pointer is a bug in this program, not a condition to
// handle), and everything else throws a `SystemCallError` naming the call. The fast path (a
// non-negative result) is inlined into the caller; errno is read, and the call's name built, in
// `classifyFailure`, out of line, so a success costs one comparison.
//
// In debug builds (ENABLE_MOCKING, as swift-system builds its tests) every call first asks the
// `SystemCallMock` driver of the current task or thread, which may record it and answer in its
// place: the seam tests use to inject EINTR, EAGAIN or any errno into real code paths.

/// Runs `body` (a call returning -1 with errno on failure) until it is not interrupted.
@inlinable @inline(__always)
public func syscall<T: FixedWidthInteger>(_ name: @autoclosure () -> String,
                                          _ body: () -> T) throws(SystemCallError) -> IOResult<T> {
    while true {
        #if ENABLE_MOCKING
        let r: T
        if let forced = SystemCallMock.intercept(name) {
            Glibc.errno = forced
            r = -1
        } else {
            r = body()
        }
        #else
        let r = body()
        #endif
        if r >= 0 { return .processed(r) }
        switch try classifyFailure(name) {
        case .retry: continue
        case .wouldBlock: return .wouldBlock
        }
    }
}

/// For calls that never legitimately return EAGAIN (setsockopt, bind, a blocking read): the value
/// or a throw (an EAGAIN there throws too, naming the call).
@inlinable @inline(__always)
public func syscallValue<T: FixedWidthInteger>(_ name: @autoclosure () -> String,
                                               _ body: () -> T) throws(SystemCallError) -> T {
    switch try syscall(name(), body) {
    case .processed(let v): return v
    case .wouldBlock: throw SystemCallError(name(), errno: EAGAIN)
    }
}

/// For library calls that return NULL with errno set (mnl_socket_open, fopen): the pointer or a
/// throw. EINTR is retried like everywhere else.
@inlinable @inline(__always)
public func syscallPointer<P>(_ name: @autoclosure () -> String, _ body: () -> P?) throws(SystemCallError) -> P {
    while true {
        #if ENABLE_MOCKING
        if let forced = SystemCallMock.intercept(name) {
            Glibc.errno = forced
            if case .retry = try classifyFailure(name) { continue }
            throw SystemCallError(name(), errno: EAGAIN)
        }
        #endif
        if let p = body() { return p }
        switch try classifyFailure(name) {
        case .retry: continue
        case .wouldBlock: throw SystemCallError(name(), errno: EAGAIN)
        }
    }
}

/// For calls that return the error number itself, 0 on success (posix_spawn, pthread_*).
@inlinable @inline(__always)
public func syscallReturningError(_ name: @autoclosure () -> String, _ body: () -> Int32) throws(SystemCallError) {
    while true {
        #if ENABLE_MOCKING
        let rc: Int32 = SystemCallMock.intercept(name) ?? body()
        #else
        let rc = body()
        #endif
        if rc == 0 { return }
        Glibc.errno = rc
        switch try classifyFailure(name) {
        case .retry: continue
        case .wouldBlock: throw SystemCallError(name(), errno: EAGAIN)
        }
    }
}

@usableFromInline
enum FailureAction { case retry, wouldBlock }

/// The slow path: reads errno right after the failed call (nothing in between may touch it) and
/// decides. Out of line so the inlined wrapper stays a compare and a branch.
@inline(never) @usableFromInline
func classifyFailure(_ name: () -> String) throws(SystemCallError) -> FailureAction {
    let e = Glibc.errno
    switch e {
    case EINTR: return .retry
    case EAGAIN, EWOULDBLOCK: return .wouldBlock
    case EBADF, EFAULT: fatalError("\(name()): \(String(cString: strerror(e))): a bug, not a condition")
    default: throw SystemCallError(name(), errno: e)
    }
}
