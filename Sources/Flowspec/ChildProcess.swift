#if canImport(Glibc)
import Glibc
#endif
import CProcessControl

/// The speaker's programs, started with `rg_spawn_bound` (CProcessControl): bound to the agent's
/// life by PR_SET_PDEATHSIG, never through a shell, from fixed directories, with a minimal
/// environment.
public enum ChildProcess {
    /// Where Debian installs gobgpd and gobgp; not `$PATH` (the agent runs as root).
    static let searchPath = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    static let environment = ["PATH=" + searchPath.joined(separator: ":"), "LC_ALL=C"]

    public static func find(_ program: String) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        for d in searchPath where access(d + "/" + program, X_OK) == 0 { return d + "/" + program }
        return nil
    }

    /// Starts `argv` with stdout and stderr on `output`; the child gets `deathSignal` when the
    /// calling thread exits. Returns the pid.
    static func start(_ path: String, _ argv: [String], output: Int32, deathSignal: Int32 = SIGKILL) throws(FlowspecError) -> pid_t {
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cArgs.append(nil)
        var cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) }
        cEnv.append(nil)
        defer { for p in cArgs + cEnv { free(p) } }
        let pid = rg_spawn_bound(path, &cArgs, &cEnv, output, deathSignal)
        guard pid > 0 else { throw FlowspecError("fork for \(path): \(String(cString: strerror(errno)))") }
        return pid
    }

    /// Waits for `pid`; returns its exit code (128 + signal when killed).
    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        // WIFEXITED/WEXITSTATUS are macros Swift cannot import.
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Runs `argv` to completion and returns its exit code and output (stdout and stderr
    /// together), killed after `timeout` seconds: a CLI that hangs on a dead API must not stall
    /// the escalation.
    public static func run(_ argv: [String], timeout: Double = 10) throws(FlowspecError) -> (status: Int32, output: String) {
        guard let path = find(argv[0]) else { throw FlowspecError("\(argv[0]) not found (install the gobgpd package)") }
        var fds: [Int32] = [-1, -1]
        // pipe2 is declared only under _GNU_SOURCE; the child closes every descriptor past 2 anyway.
        guard pipe(&fds) == 0 else { throw FlowspecError("pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        let pid: pid_t
        do { pid = try start(path, argv, output: fds[1]) } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        close(fds[1])
        var output: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        let deadline = monotonicSeconds() + timeout
        var killed = false
        while true {
            var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let left = deadline - monotonicSeconds()
            if left <= 0 {
                if !killed { kill(pid, SIGKILL); killed = true }
            }
            let r = poll(&p, 1, left <= 0 ? 1000 : Int32(min(1000, left * 1000) + 1))
            if r < 0, errno == EINTR { continue }
            if r == 0 { continue }
            let n = read(fds[0], &buf, buf.count)
            if n > 0 { output.append(contentsOf: buf[0..<n]); if output.count > 1 << 20 { output.removeFirst(output.count - (1 << 20)) }; continue }
            if n < 0, errno == EINTR { continue }
            break
        }
        close(fds[0])
        let status = wait(pid)
        let text = String(decoding: output, as: UTF8.self)
        if killed { throw FlowspecError("\(argv[0]) timed out after \(Int(timeout)) s") }
        return (status, text)
    }
}

func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// A speaker or escalation failure, said in one line.
public struct FlowspecError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
