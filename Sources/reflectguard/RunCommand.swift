import Agent
import PacketParser
import Rules
import VerdictEngine
#if canImport(Glibc)
import Glibc
#endif

/// `reflectguard run`: the inline agent. Parses the command line into a `RunRequest`, hands it to
/// the agent (`Agent.run`: the rules, the checks, the lifecycle), and reports how it ended.
enum RunCommand {
    static let dryRun = OptionSpec(name: "--dry-run", value: nil,
        help: "Accept every packet; score what would be dropped and print a summary at exit.")
    static let metrics = OptionSpec(name: "--metrics", value: "HOST:PORT",
        help: "Serve Prometheus metrics on http://HOST:PORT/metrics. HOST: an address ([V6ADDR] for IPv6) or a name to resolve; ':PORT' listens on every interface, PORT alone on loopback. Default off.")
    static let noApply = OptionSpec(name: "--no-apply", value: nil,
        help: "Do not load the rules (they are managed elsewhere, e.g. 'reflectguard nft apply').")
    static let keepRules = OptionSpec(name: "--keep-rules", value: nil,
        help: "Leave the rules in place at exit (queues bypass while no agent runs).")
    static let queueMaxlen = OptionSpec(name: "--queue-maxlen", value: "N",
        help: "Kernel queue length per queue (default 4096); the socket buffer is sized with it.")
    static let rcvbuf = OptionSpec(name: "--rcvbuf", value: "BYTES",
        help: "Socket receive buffer per queue (default: queue-maxlen × 2048).")
    static let overloadAfter = OptionSpec(name: "--overload-after", value: "MS",
        help: "Arm kernel enforcement for the protected networks after MS ms of queue backlog (default 20, 0: never).")
    static let logLevel = OptionSpec(name: "--log-level", value: "debug|info|warning|error",
        help: "Least severe JSON log line written to stderr (default info).")

    static let spec = CommandSpec(
        path: "reflectguard run",
        overview: "Run inline on NFQUEUE: judge the queued handshake packets and RSTs, arm kernel enforcement under attack.",
        usage: ["[--queue SPEC] [--rules FILE] [--protect CIDR]... [-D NAME=VALUE]... [--mode M] [--dry-run] [--metrics HOST:PORT] [--no-apply] [--keep-rules]"],
        options: [SharedOptions.queue] + SharedOptions.policy
            + [dryRun, metrics, noApply, keepRules, SharedOptions.hook, SharedOptions.backend, queueMaxlen, rcvbuf, overloadAfter, logLevel])

    static func main(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, spec)
        var request = RunRequest()
        request.settings.dryRun = a.flag("--dry-run")
        request.settings.version = version
        request.rulesPath = a.value("--rules")
        request.configPath = a.value("--config")
        request.protect = a.all("--protect")
        request.applyRules = !a.flag("--no-apply")
        request.keepRules = a.flag("--keep-rules")

        request.defines = try SharedOptions.defines(a, spec)
        if let m = a.value("--mode") {
            guard Mode(rawValue: m) != nil else { throw .usage("--mode '\(m)': expected symmetric or ingress-only", spec) }
            request.defines.append("mode=\(m)")
        }
        if let m = a.value("--metrics") {
            guard let hp = parseHostPort(m) else {
                throw .usage("--metrics '\(m)': expected HOST:PORT, [V6ADDR]:PORT or PORT", spec)
            }
            request.settings.metrics = hp
        }
        if let n = a.value("--queue-maxlen") {
            guard let v = UInt32(n), v >= 16 else { throw .usage("--queue-maxlen '\(n)': expected a number ≥ 16", spec) }
            request.settings.queueMaxLength = v
        }
        if let n = a.value("--rcvbuf") {
            guard let v = Int(n), v >= 65536 else { throw .usage("--rcvbuf '\(n)': expected a byte count ≥ 65536", spec) }
            request.settings.receiveBufferBytes = v
        }
        if let n = a.value("--overload-after") {
            guard let v = Int64(n), v >= 0, v <= 60_000 else {
                throw .usage("--overload-after '\(n)': expected milliseconds, 0 to 60000", spec)
            }
            request.settings.overloadAfter = v * 1_000_000
        }
        request.hook = try SharedOptions.hook(a, spec)
        request.backend = try SharedOptions.backend(a, spec)
        var logger = Logger()
        if let l = a.value("--log-level") {
            let levels: [String: Logger.Level] = ["debug": .debug, "info": .info, "warning": .warning, "error": .error]
            guard let v = levels[l] else { throw .usage("--log-level '\(l)': expected debug, info, warning or error", spec) }
            logger.level = v
        }

        do throws(RunFailure) { return try Agent.run(request, logger: logger) } catch {
            switch error {
            case .usage(let message):
                throw .usage(message, spec)
            case .rules(let message):
                printError("Error: \(message)")
                return ExitCode.rules.rawValue
            case .startFailed(let message, let code):
                return startFailed(logger, message, ExitCode(rawValue: code) ?? .failure)
            }
        }
    }

    /// A failure after the command line was taken: on a terminal an `Error: …` line; anywhere
    /// else (a pipe, a file, journald) a log line like every other the agent writes, so a reader
    /// of the JSON stream never meets plain text in it. Usage errors (exit 2) stay plain: they
    /// come before there is an agent to log.
    static func startFailed(_ logger: Logger, _ message: String, _ code: ExitCode) -> Int32 {
        if isatty(2) != 0, Logger.sink == .stderr {
            printError("Error: \(message)")
        } else {
            logger.error("start-failed", [("error", .string(message)), ("exit_code", .from(Int(code.rawValue)))])
        }
        return code.rawValue
    }

    /// `--metrics` as exporters take a listen address: `HOST:PORT`, `[V6ADDR]:PORT`, `:PORT`
    /// (every interface: host ""), or `PORT` alone (loopback, as before). HOST is an address or a
    /// name the agent resolves at start (`localhost:9477`); only its syntax is checked here.
    static func parseHostPort(_ s: String) -> (host: String, port: UInt16)? {
        func port(_ p: Substring) -> UInt16? {
            guard !p.isEmpty, p.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return UInt16(p)
        }
        if let p = port(s[...]) { return ("127.0.0.1", p) }
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            let host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":"), let p = port(rest.dropFirst()), host.contains(":"), IPAddress(host) != nil else { return nil }
            return (host, p)
        }
        guard let colon = s.lastIndex(of: ":"), let p = port(s[s.index(after: colon)...]) else { return nil }
        let host = String(s[..<colon])
        if host.isEmpty { return ("", p) }
        if host.contains(":") { return nil }   // an IPv6 address needs its brackets
        if IPAddress(host) != nil { return (host, p) }
        return isHostName(host) ? (host, p) : nil
    }

    /// RFC 1123 host name syntax: labels of letters, digits and hyphens, 1-63 bytes, not starting
    /// or ending with a hyphen, 253 bytes in all.
    static func isHostName(_ h: String) -> Bool {
        guard !h.isEmpty, h.utf8.count <= 253 else { return false }
        let labels = h.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { l in
            !l.isEmpty && l.utf8.count <= 63 && l.first != "-" && l.last != "-"
                && l.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        } && !(labels.last!.allSatisfy { $0.isNumber })
    }

    /// CAP_NET_ADMIN in this process's effective set.
    static func hasNetAdmin() -> Bool { Capabilities.effective(Capabilities.netAdmin) }
}
