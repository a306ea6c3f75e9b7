import Agent
#if canImport(Glibc)
import Glibc
#endif

/// `reflectguard reload` and `reflectguard stop`: synchronous requests to the agent running in
/// this network namespace (the unit's ExecReload, the package's removal). `reload` exits 0 when
/// the agent took the new rules and configuration, and with the agent's exit code (3 with the
/// file:line:column for a rules error) when it refused them and kept the running ones.
enum ControlCommand {
    static let timeout = OptionSpec(name: "--timeout", value: "SECONDS",
        help: "How long to wait for the agent (default 60).")

    static let reloadSpec = spec("reload",
        "Ask the running agent to check and apply its rules and configuration again; wait for the result.")
    static let stopSpec = spec("stop",
        "Ask the running agent to remove its rules and exit; wait until it has (nothing running: exit 0).")

    /// Both requests take the same options: only the wait.
    private static func spec(_ name: String, _ overview: String) -> CommandSpec {
        CommandSpec(path: "reflectguard \(name)", overview: overview, usage: ["[--timeout SECONDS]"], options: [timeout])
    }

    static func reload(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, reloadSpec)
        let seconds = try parseTimeout(a, reloadSpec)
        switch ControlChannel.send(.reload, timeout: seconds) {
        case .failure(let e):
            printError("Error: \(e)")
            return ExitCode.failure.rawValue
        case .success(.ok(let message)):
            if !message.isEmpty { print(message) }
            return ExitCode.success.rawValue
        case .success(.refused(let code, let message)):
            printError("Error: reload refused, the running rules and policy are unchanged: \(message)")
            return code == 0 ? ExitCode.failure.rawValue : code
        }
    }

    static func stop(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, stopSpec)
        let seconds = try parseTimeout(a, stopSpec)
        let pid: Int32?
        if case .agent(let p) = NamespaceLock.holder() { pid = p } else { return ExitCode.success.rawValue }
        switch ControlChannel.send(.stop, timeout: seconds) {
        case .failure(let e):
            if e.noAgent { return ExitCode.success.rawValue }
            printError("Error: \(e)")
            return ExitCode.failure.rawValue
        case .success(.refused(let code, let message)):
            printError("Error: \(message)")
            return code == 0 ? ExitCode.failure.rawValue : code
        case .success(.ok):
            break
        }
        // The lock is the agent's life: free once it has removed its rules and exited.
        for _ in 0..<(Int(seconds) * 10) {
            if NamespaceLock.holder() == .nobody { return ExitCode.success.rawValue }
            usleep(100_000)
        }
        printError("Error: \(NftCommand.agentName(pid)) still runs after \(seconds) s")
        return ExitCode.failure.rawValue
    }

    private static func parseTimeout(_ a: Arguments, _ spec: CommandSpec) throws(CommandExit) -> Int32 {
        guard let t = a.value("--timeout") else { return 60 }
        guard let v = Int32(t), v >= 1, v <= 3600 else {
            throw CommandExit.usage(UsageError(message: "--timeout '\(t)': expected seconds, 1 to 3600"), spec)
        }
        return v
    }
}
