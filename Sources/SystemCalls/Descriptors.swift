#if canImport(Glibc)
import Glibc
#endif

// The few loops over read/write/waitpid every caller would otherwise write again, each through
// the one wrapper.

/// Reads `fd` until end of file, or until `limit` bytes (then one more is read at most, so a
/// caller can tell "exactly limit" from "longer"). A blocking descriptor; EAGAIN throws.
public func readToEnd(_ fd: Int32, limit: Int, name: @autoclosure () -> String) throws(SystemCallError) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: min(limit + 1, 1 << 16))
    var count = 0
    while count <= limit {
        if count == bytes.count { bytes += repeatElement(0, count: min(bytes.count, limit + 1 - count)) }
        let n = try bytes.withUnsafeMutableBytes { b in
            Result { () throws(SystemCallError) in try syscallValue(name()) { read(fd, b.baseAddress! + count, b.count - count) } }
        }.get()
        if n == 0 { break }
        count += n
    }
    bytes.removeLast(bytes.count - count)
    return bytes
}

/// Writes all of `bytes` (a blocking descriptor: partial writes continue where they stopped).
/// A write that takes nothing is ENOSPC.
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, name: @autoclosure () -> String) throws(SystemCallError) {
    var done = 0
    while done < bytes.count {
        let n = try syscallValue(name()) { write(fd, bytes.baseAddress! + done, bytes.count - done) }
        guard n > 0 else { throw SystemCallError(name(), errno: ENOSPC) }
        done += n
    }
}

/// Waits for child `pid` to end; its exit code, or 128 + the signal that killed it (a shell's
/// convention). WIFEXITED/WEXITSTATUS are macros Swift cannot import.
public func waitForChild(_ pid: pid_t) throws(SystemCallError) -> Int32 {
    var status: Int32 = 0
    _ = try syscallValue("waitpid(\(pid))") { waitpid(pid, &status, 0) }
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// poll(2) on one descriptor for `events`; `.wouldBlock` when the timeout passed. EINTR restarts
/// with the whole timeout, so callers with a deadline pass what is left of it each turn.
public func pollOne(_ fd: Int32, events: Int16 = Int16(POLLIN), timeoutMilliseconds: Int32,
                    name: @autoclosure () -> String) throws(SystemCallError) -> IOResult<Int16> {
    var p = pollfd(fd: fd, events: events, revents: 0)
    let n = try syscallValue(name()) { poll(&p, 1, timeoutMilliseconds) }
    return n == 0 ? .wouldBlock : .processed(p.revents)
}

/// Reads the file at `path` whole, at most `limit` + 1 bytes (/proc files show size 0: read until
/// end of file, never by the size).
public func readFile(_ path: String, limit: Int) throws(SystemCallError) -> [UInt8] {
    let fd = try syscallValue("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    return try readToEnd(fd, limit: limit, name: "read(\(path))")
}

/// `writeAll` for an array's bytes.
public func writeAll(_ fd: Int32, _ bytes: [UInt8], name: @autoclosure () -> String) throws(SystemCallError) {
    try bytes.withUnsafeBytes { b in Result { () throws(SystemCallError) in try writeAll(fd, b, name: name()) } }.get()
}
