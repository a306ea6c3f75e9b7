#if canImport(Glibc)
import Glibc
#endif
import Testing
import SystemCalls

/// The one wrapper: EINTR retried, EAGAIN a value, other errors typed and named, EBADF a trap;
/// and the mocking seam that answers for the kernel in debug builds.
@Suite struct SystemCallTests {
    private func pipePair() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try syscallValue("pipe") { pipe(&fds) }
        return (fds[0], fds[1])
    }

    @Test func interruptedCallsAreRetriedUntilTheyRun() throws {
        try #require(SystemCallMock.isCompiledIn, "the seam is compiled into debug builds (swift test)")
        let (r, w) = try pipePair()
        defer { close(r); close(w) }
        var byte: UInt8 = 42
        _ = try syscallValue("write") { write(w, &byte, 1) }
        let mock = SystemCallMock()
        mock.force(EINTR, on: "read", times: 3)
        var got: UInt8 = 0
        let n = try mock.run { () throws(SystemCallError) in try syscallValue("read(pipe)") { read(r, &got, 1) } }
        #expect(n == 1 && got == 42)
        #expect(mock.trace == Array(repeating: "read(pipe)", count: 4), "three interrupted, the fourth ran")
    }

    @Test func eagainIsAStateNotAnError() throws {
        let (r, w) = try pipePair()
        defer { close(r); close(w) }
        let flags = try syscallValue("fcntl") { fcntl(r, F_GETFL) }
        _ = try syscallValue("fcntl") { fcntl(r, F_SETFL, flags | O_NONBLOCK) }
        var got: UInt8 = 0
        // The real kernel: an empty non-blocking pipe.
        #expect(try syscall("read(empty pipe)") { read(r, &got, 1) } == .wouldBlock)
        #expect(throws: SystemCallError("read(empty pipe)", errno: EAGAIN)) {
            try syscallValue("read(empty pipe)") { read(r, &got, 1) }
        }
    }

    @Test func otherErrorsThrowNamingTheCall() throws {
        let e = #expect(throws: SystemCallError.self) {
            try syscallValue("open(/nonexistent)") { open("/nonexistent/rg15s", O_RDONLY) }
        }
        #expect(e?.errno == ENOENT && e?.call == "open(/nonexistent)")
        #expect(e?.description == "open(/nonexistent): No such file or directory (errno \(ENOENT))")
        #expect(throws: SystemCallError("fopen", errno: ENOENT)) {
            try syscallPointer("fopen") { fopen("/nonexistent/rg15s", "r") }
        }
    }

    @Test func aForcedErrnoReachesTheCallerAsTheKernelWouldGiveIt() throws {
        try #require(SystemCallMock.isCompiledIn)
        let mock = SystemCallMock()
        mock.force(ENOBUFS, on: "sendto")
        mock.force(EAGAIN, on: "recv")
        var ran = 0
        let sent = mock.run { () -> Result<Int, SystemCallError> in
            Result { () throws(SystemCallError) in try syscallValue("sendto(x)") { ran += 1; return 5 } }
        }
        #expect(sent == .failure(SystemCallError("sendto(x)", errno: ENOBUFS)) && ran == 0, "the forced call does not run")
        let received = try mock.run { () throws(SystemCallError) in try syscall("recv(x)") { ran += 1; return 1 } }
        #expect(received == .wouldBlock)
        let again = try mock.run { () throws(SystemCallError) in try syscall("recv(x)") { ran += 1; return 1 } }
        #expect(again == .processed(1) && ran == 1, "forced once, then the call runs")
        #expect(try syscall("recv(x)") { 2 } == .processed(2), "outside `run` no driver answers")
    }

    @Test func readToEndStopsOneBytePastTheLimit() throws {
        let (r, w) = try pipePair()
        defer { close(r) }
        try writeAll(w, [UInt8](repeating: 7, count: 5000), name: "write")
        close(w)
        let bytes = try readToEnd(r, limit: 4096, name: "read")
        #expect(bytes.count == 4097, "one past the limit tells 'longer' from 'exactly'")
    }

    @Test func waitForChildReportsExitCodesAndSignals() throws {
        let exited = fork()
        if exited == 0 { _exit(3) }
        #expect(try waitForChild(exited) == 3)
        let killed = fork()
        if killed == 0 { pause(); _exit(0) }
        kill(killed, SIGKILL)
        #expect(try waitForChild(killed) == 128 + SIGKILL)
    }

    /// A closed descriptor is a bug in the program, not a condition: the wrapper traps.
    @Test func aBadDescriptorTraps() async {
        await #expect(processExitsWith: .failure) {
            var b: UInt8 = 0
            _ = try? syscall("read(-1)") { read(-1, &b, 1) }
        }
    }
}
