#if canImport(Glibc)
import Glibc
#endif
import CProcessControl
import SystemCalls

/// Runs a program with an argv array through posix_spawn (never a shell: no argument is ever
/// parsed as shell text), stdin from /dev/null, stdout and stderr captured together.
enum Spawn {
    struct Result {
        var status: Int32
        var output: String
    }

    /// The only places a child program is taken from. Not `$PATH`: the agent runs these as root
    /// or with CAP_NET_ADMIN, and a directory early in an inherited PATH (the operator's ~/bin, a
    /// `.` entry, a service manager's setting) would decide what runs with that privilege. These
    /// are where Debian installs iptables-nft, writable by root only.
    static let searchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]

    /// What a child sees of the environment: nothing of ours (XTABLES_LIBDIR, for one, would
    /// make iptables load its extensions from elsewhere), and the C locale, whose messages the
    /// callers quote.
    static let environment = ["PATH=" + searchPath.joined(separator: ":"), "LC_ALL=C"]

    static func find(_ program: String) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        for d in searchPath where access(d + "/" + program, X_OK) == 0 { return d + "/" + program }
        return nil
    }

    static func run(_ argv: [String]) throws(NftError) -> Result {
        guard let path = find(argv[0]) else {
            throw NftError("\(argv[0]) not found (install the iptables package)", rulesError: false)
        }
        var fds: [Int32] = [-1, -1]
        do throws(SystemCallError) { _ = try syscallValue("pipe") { pipe(&fds) } } catch {
            throw NftError("\(error.call): \(error.reason)", rulesError: false)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        // The child must not keep the pipe's own ends open, or the read below never sees EOF.
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_addclose(&actions, fds[1])
        // Nor any other descriptor of the agent's (queue sockets, metrics clients, lock socket).
        rg_spawn_close_from(&actions, 3)
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cArgs.append(nil)
        var cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) }
        cEnv.append(nil)
        defer { for p in cArgs + cEnv { free(p) } }
        // The agent ignores SIGPIPE and blocks its lifecycle signals; an ignored or blocked
        // signal survives exec, and iptables-nft should get neither.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t(), unblocked = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        sigemptyset(&unblocked)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        do throws(SystemCallError) {
            defer { close(fds[1]) }
            try syscallReturningError("posix_spawn \(path)") { posix_spawn(&pid, path, &actions, &attributes, cArgs, cEnv) }
        } catch {
            close(fds[0])
            throw NftError("\(error.call): \(error.reason)", rulesError: false)
        }
        // EOF, or a read error: the exit status still tells what happened.
        let output = (try? readToEnd(fds[0], limit: Int.max - 1, name: "read(\(argv[0]) output)")) ?? []
        close(fds[0])
        let exitCode: Int32
        do throws(SystemCallError) { exitCode = try waitForChild(pid) } catch {
            throw NftError("\(error.call): \(error.reason)", rulesError: false)
        }
        return Result(status: exitCode, output: String(decoding: output, as: UTF8.self))
    }
}
