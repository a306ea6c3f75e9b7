#if canImport(Glibc)
import Glibc
#endif
import CProcessControl
import SystemCalls

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
        do throws(SystemCallError) {
            return try syscallValue("fork for \(path)") { rg_spawn_bound(path, &cArgs, &cEnv, output, deathSignal) }
        } catch {
            throw FlowspecError("\(error.call): \(error.reason)")
        }
    }

    /// Waits for `pid`; returns its exit code (128 + signal when killed).
    static func wait(_ pid: pid_t) -> Int32 {
        (try? waitForChild(pid)) ?? -1
    }

    /// Runs `argv` to completion and returns its exit code and output (stdout and stderr
    /// together), killed after `timeout` seconds: a CLI that hangs on a dead API must not stall
    /// the escalation.
    public static func run(_ argv: [String], timeout: Double = 10) throws(FlowspecError) -> (status: Int32, output: String) {
        guard let path = find(argv[0]) else { throw FlowspecError("\(argv[0]) not found (install the gobgpd package)") }
        var fds: [Int32] = [-1, -1]
        // pipe2 is declared only under _GNU_SOURCE; the child closes every descriptor past 2 anyway.
        do throws(SystemCallError) { _ = try syscallValue("pipe") { pipe(&fds) } } catch {
            throw FlowspecError("\(error.call): \(error.reason)")
        }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        let pid: pid_t
        do { pid = try start(path, argv, output: fds[1]) } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        close(fds[1])
        var output: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        let deadline = monotonicNanoseconds() + Int64(timeout * 1e9)
        var killed = false
        while true {
            let left = deadline - monotonicNanoseconds()
            if left <= 0, !killed {
                kill(pid, SIGKILL)
                killed = true
            }
            let slice = left <= 0 ? 1000 : Int32(min(1000, left / 1_000_000 + 1))
            // A poll error falls through to the read, which tells whether the pipe is still good.
            if case .wouldBlock? = try? pollOne(fds[0], timeoutMilliseconds: slice, name: "poll(\(argv[0]) output)") { continue }
            let got = buf.withUnsafeMutableBytes { b in try? syscallValue("read(\(argv[0]) output)") { read(fds[0], b.baseAddress, b.count) } }
            guard let n = got, n > 0 else { break }
            output.append(contentsOf: buf[0..<n])
            if output.count > 1 << 20 { output.removeFirst(output.count - (1 << 20)) }
        }
        close(fds[0])
        let status = wait(pid)
        let text = String(decoding: output, as: UTF8.self)
        if killed { throw FlowspecError("\(argv[0]) timed out after \(Int(timeout)) s") }
        return (status, text)
    }
}

func monotonicSeconds() -> Double { Double(monotonicNanoseconds()) / 1e9 }

/// A speaker or escalation failure, said in one line.
public struct FlowspecError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
