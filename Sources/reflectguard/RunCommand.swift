import Agent
import Flowspec
import PacketParser
import NftBackend
import Rules
import VerdictEngine
#if canImport(Glibc)
import Glibc
#endif

/// `reflectguard run`: the inline agent. Parses the command line, reads the rules (the same file
/// the kernel gets), and hands the agent its settings and the hooks that touch the ruleset.
enum RunCommand {
    static let dryRun = OptionSpec(name: "--dry-run", value: nil,
        help: "Accept every packet; score what would be dropped and print a summary at exit.")
    static let metrics = OptionSpec(name: "--metrics", value: "HOST:PORT",
        help: "Serve Prometheus metrics on http://HOST:PORT/metrics. HOST: an address ([V6ADDR] for IPv6) or a name to resolve; ':PORT' listens on every interface, PORT alone on loopback. Default off.")
    static let noApply = OptionSpec(name: "--no-apply", value: nil,
        help: "Do not load the rules (they are managed elsewhere, e.g. 'reflectguard nft apply').")
    static let keepRules = OptionSpec(name: "--keep-rules", value: nil,
        help: "Leave the rules in place at exit (queues bypass while no agent runs).")
    static let hook = OptionSpec(name: "--hook", value: "router|host",
        help: "Forwarded traffic (default) or this host's own.")
    static let backend = OptionSpec(name: "--backend", value: "auto|nft|xt",
        help: "Queue backend: nft queue, xtables NFQUEUE on marked packets, or probe (default auto).")
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
            + [dryRun, metrics, noApply, keepRules, hook, backend, queueMaxlen, rcvbuf, overloadAfter, logLevel])

    static func main(_ args: [String]) -> Int32 {
        let a = parseOrExit(args, spec)
        var settings = AgentSettings()
        settings.dryRun = a.flag("--dry-run")
        settings.version = version

        var defines = a.all("-D")
        if let q = a.value("--queue") {
            guard let r = QueueRange(q), !q.contains("-") else {
                exitUsage(UsageError(message: "--queue '\(q)': expected a queue number N or a range N:M"), spec)
            }
            _ = r
            defines.append("queue=\(q)")
        }
        if let m = a.value("--mode") {
            guard Mode(rawValue: m) != nil else {
                exitUsage(UsageError(message: "--mode '\(m)': expected symmetric or ingress-only"), spec)
            }
            defines.append("mode=\(m)")
        }
        if let m = a.value("--metrics") {
            guard let hp = parseHostPort(m) else {
                exitUsage(UsageError(message: "--metrics '\(m)': expected HOST:PORT, [V6ADDR]:PORT or PORT"), spec)
            }
            settings.metrics = hp
        }
        if let n = a.value("--queue-maxlen") {
            guard let v = UInt32(n), v >= 16 else {
                exitUsage(UsageError(message: "--queue-maxlen '\(n)': expected a number ≥ 16"), spec)
            }
            settings.queueMaxLength = v
        }
        if let n = a.value("--rcvbuf") {
            guard let v = Int(n), v >= 65536 else {
                exitUsage(UsageError(message: "--rcvbuf '\(n)': expected a byte count ≥ 65536"), spec)
            }
            settings.receiveBufferBytes = v
        }
        if let n = a.value("--overload-after") {
            guard let v = Int64(n), v >= 0, v <= 60_000 else {
                exitUsage(UsageError(message: "--overload-after '\(n)': expected milliseconds, 0 to 60000"), spec)
            }
            settings.overloadAfter = v * 1_000_000
        }
        var hookValue = Hook.router
        if let h = a.value("--hook") {
            guard let v = Hook(rawValue: h) else { exitUsage(UsageError(message: "--hook '\(h)': expected router or host"), spec) }
            hookValue = v
        }
        let backendChoice = a.value("--backend") ?? "auto"
        guard ["auto", "nft", "xt"].contains(backendChoice) else {
            exitUsage(UsageError(message: "--backend '\(backendChoice)': expected auto, nft or xt"), spec)
        }
        var logger = Logger()
        if let l = a.value("--log-level") {
            let levels: [String: Logger.Level] = ["debug": .debug, "info": .info, "warning": .warning, "error": .error]
            guard let v = levels[l] else { exitUsage(UsageError(message: "--log-level '\(l)': expected debug, info, warning or error"), spec) }
            logger.level = v
        }

        let rulesPath = a.value("--rules")
        let configPath = a.value("--config")
        let allDefines = defines
        let hookChoice = hookValue
        let protect = a.all("--protect")
        @Sendable func resolve() throws(RulesError) -> ResolvedRules {
            // Read again on every reload: the operator edits the configuration, then reloads.
            let files = try SharedOptions.rulesFiles(rules: rulesPath, config: configPath)
            return try RulesConfig.resolve(rules: files.rules, config: files.config, protect: protect, defines: allDefines)
        }
        let resolved: ResolvedRules
        do { resolved = try resolve() } catch {
            if error.fromCommandLine { exitUsage(UsageError(message: error.message), spec) }
            // An unreadable file is a runtime failure (1), as in score and nft; a file nft or the
            // policy rejects is a rules error (3).
            return startFailed(logger, "\(error)", error.isUnreadableFile ? .failure : .rules)
        }
        guard !resolved.policy.protected.isEmpty else {
            exitUsage(UsageError(message: "no protected network: give --protect CIDR or define protected_v4/protected_v6 in the rules"), spec)
        }
        // The flowspec_* defines that only make sense together (a peer needs both AS numbers).
        do throws(FlowspecConfigError) {
            settings.flowspec = try FlowspecConfig(values: resolved.values, protected: resolved.policy.protected)
        } catch {
            printError("Error: \(resolved.file.name): \(error)")
            return ExitCode.rules.rawValue
        }
        // Only now, after everything that can be checked without privileges: a usage or rules
        // error must get its own exit code (2, 3) whoever runs the command.
        guard hasNetAdmin() else {
            return startFailed(logger, "'reflectguard run' needs CAP_NET_ADMIN (run as root, or grant the capability: see scripts/reflectguard.service)", .failure)
        }
        settings.queues = resolved.queues.first...resolved.queues.last
        settings.armedTimeout = resolved.armedTimeout
        // Checked by the define table: one of auto, xdp, nft.
        settings.xdp.path = resolved.values["kernel_path"].flatMap(KernelPath.init(rawValue:)) ?? .auto
        settings.xdp.always = resolved.values["kernel_enforce"] == "always"
        settings.xdp.host = hookValue == .host
        settings.xdp.flowspec = settings.flowspec != nil
        settings.logLevel = logger.level

        let applyRules = !a.flag("--no-apply")
        let backend: Backend
        switch backendChoice {
        case "nft": backend = .nft
        case "xt": backend = .xt
        default:
            if applyRules {
                do { backend = try NftRuleset.probeBackend() } catch {
                    return startFailed(logger, error.message, .failure)
                }
            } else {
                backend = .xt
            }
        }

        // Arming runs on the agent's enforcement queue only; one libnftables context serves it.
        let armer = ArmerBox()
        // Made now, not at the first attack: the context's first use reads nft's cache, which
        // would add tens of milliseconds to the first arming.
        if !settings.dryRun { try? armer.prepare() }
        let dry = settings.dryRun
        let table = AgentRuleset()
        let kernelCounters = KernelCounters()
        let hooks = RulesHooks(
            apply: {
                do throws(NftError) { return try table.apply(resolved, hook: hookChoice, backend: backend) } catch {
                    throw RunError(error)
                }
            },
            reload: {
                // Pure: resolving reads the file only; the agent applies the plan after checking it.
                let fresh: ResolvedRules
                do throws(RulesError) { fresh = try resolve() } catch { throw RunError(message: "\(error)", exitCode: error.isUnreadableFile ? 1 : 3) }
                let timeout = fresh.armedTimeout
                return ReloadPlan(policy: fresh.policy, queues: fresh.queues.first...fresh.queues.last,
                                  armedTimeout: timeout, apply: {
                    guard applyRules else { return }
                    do throws(NftError) { _ = try table.apply(fresh, hook: hookChoice, backend: backend) } catch { throw RunError(error) }
                })
            },
            release: { keep in
                do throws(NftError) { return try table.release(keep: keep) } catch { throw RunError(error) }
            },
            arm: { prefix, timeout, renew in
                // Dry-run changes no verdict anywhere, the kernel's included: report only.
                if dry { return }
                try armer.arm(prefix, timeout: timeout, renew: renew)
            },
            missing: {
                do throws(NftError) {
                    let c = try table.check()
                    if let other = c.takenOverBy { return .takenOver(by: other.description) }
                    return c.missing.map { .missing($0) } ?? .present
                } catch { throw RunError(error) }
            },
            reapply: {
                do throws(NftError) { try table.reapply() } catch { throw RunError(error) }
            },
            kernelCounters: {
                do throws(NftError) {
                    return try kernelCounters.read().map {
                        KernelCount(verdict: $0.verdict, reason: $0.reason, family: $0.family, packets: $0.packets, bytes: $0.bytes)
                    }
                } catch { throw RunError(error) }
            },
            armRST: { prefix, timeout, renew in
                if dry { return }
                try armer.arm(prefix, timeout: timeout, renew: renew, rst: true)
            })

        let agent = Agent(settings: settings, hooks: hooks, logger: logger, applyRules: applyRules,
                          keepRules: a.flag("--keep-rules"))
        do throws(AgentStartError) {
            return try agent.run(initialPolicy: resolved.policy)
        } catch {
            return startFailed(logger, error.message, ExitCode(rawValue: error.exitCode) ?? .failure)
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

/// A rules or nft failure with its documented exit code (3: nft rejected the rules).
struct RunError: Error, ExitCoded, CustomStringConvertible {
    var message: String
    var exitCode: Int32
    init(message: String, exitCode: Int32) { self.message = message; self.exitCode = exitCode }
    init(_ e: NftError) { message = e.message; exitCode = e.isRulesError ? 3 : 1 }
    var description: String { message }
}

/// The libnftables context for arming, made on first use (on the enforcement queue).
final class ArmerBox: @unchecked Sendable {
    private var victims: ArmedVictims?
    func prepare() throws {
        if victims == nil { victims = try ArmedVictims() }
    }
    func arm(_ prefix: CIDR, timeout: Double, renew: Bool, rst: Bool = false) throws {
        if victims == nil { victims = try ArmedVictims() }
        try victims!.arm(prefix, timeout: timeout, renew: renew, rst: rst)
    }
}
