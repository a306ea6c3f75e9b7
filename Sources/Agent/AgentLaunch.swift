import Flowspec
import NftBackend
import Rules
import Synchronization
import VerdictEngine

/// What `reflectguard run` took from its command line, every value already well-formed; nothing
/// is checked against the rules or the system yet.
public struct RunRequest: Sendable {
    /// The agent's own settings (dry-run, metrics, queue sizes, version, log level); the rest of
    /// them (queues, timeouts, kernel path, Flowspec) come from the rules at start.
    public var settings = AgentSettings()
    /// `--rules`, `--config`, `--protect`, `-D` (with `--queue` and `--mode` folded in).
    public var rulesPath: String? = nil
    public var configPath: String? = nil
    public var protect: [String] = []
    public var defines: [String] = []
    public var hook: Hook = .router
    /// `--backend`; nil: probe (auto).
    public var backend: Backend? = nil
    /// false with `--no-apply`: the rules are managed elsewhere.
    public var applyRules = true
    public var keepRules = false

    public init() {}
}

/// Why `run` did not start, and how its caller must report it (the exit codes of docs/output.md).
public enum RunFailure: Error, Equatable {
    /// A value from the command line that the rules refuse, or no protected network at all:
    /// a usage error (exit 2).
    case usage(String)
    /// A plain `Error:` line and exit 3: rules that are well-formed but do not fit together.
    case rules(String)
    /// The start failed after the command line was taken, with this exit code (1 or 3).
    case startFailed(String, exitCode: Int32)
}

extension Agent {
    /// `reflectguard run` from a parsed command line to the agent's exit: resolves the rules,
    /// checks what can be checked without privileges (so a usage or rules error gets its own exit
    /// code whoever runs it), then the capability, picks the queue backend, wires the Rules and
    /// NftBackend API into the agent's hooks and runs it. Returns the exit code of a run that
    /// started; throws for one that did not.
    public static func run(_ request: RunRequest, logger: Logger) throws(RunFailure) -> Int32 {
        let resolve = request.resolver()
        let resolved: ResolvedRules
        do throws(RulesError) { resolved = try resolve() } catch {
            if error.fromCommandLine { throw .usage(error.message) }
            // An unreadable file is a runtime failure (1), as in score and nft; a file nft or the
            // policy rejects is a rules error (3).
            throw .startFailed("\(error)", exitCode: error.isUnreadableFile ? 1 : 3)
        }
        guard !resolved.policy.protected.isEmpty else {
            throw .usage("no protected network: give --protect CIDR or define protected_v4/protected_v6 in the rules")
        }
        var settings = request.settings
        // The flowspec_* defines that only make sense together (a peer needs both AS numbers).
        do throws(FlowspecConfigError) {
            settings.flowspec = try FlowspecConfig(values: resolved.values, protected: resolved.policy.protected)
        } catch {
            throw .rules("\(resolved.file.name): \(error)")
        }
        // Only now, after everything that can be checked without privileges.
        guard Capabilities.effective(Capabilities.netAdmin) else {
            throw .startFailed("'reflectguard run' needs CAP_NET_ADMIN (run as root, or grant the capability: see scripts/reflectguard.service)",
                               exitCode: 1)
        }
        settings.queues = resolved.queues.first...resolved.queues.last
        settings.armedTimeout = resolved.armedTimeout
        // Checked by the define table: one of auto, xdp, nft.
        settings.xdp.path = resolved.values["kernel_path"].flatMap(KernelPath.init(rawValue:)) ?? .auto
        settings.xdp.always = resolved.values["kernel_enforce"] == "always"
        settings.xdp.host = request.hook == .host
        settings.xdp.flowspec = settings.flowspec != nil
        settings.logLevel = logger.level

        let backend: Backend
        if let chosen = request.backend {
            backend = chosen
        } else if request.applyRules {
            do { backend = try NftRuleset.probeBackend() } catch { throw .startFailed(error.message, exitCode: 1) }
        } else {
            backend = .xt
        }

        let agent = Agent(settings: settings, hooks: request.hooks(resolved, backend: backend, dryRun: settings.dryRun, resolve: resolve),
                          logger: logger, applyRules: request.applyRules, keepRules: request.keepRules)
        do throws(AgentStartError) { return try agent.run(initialPolicy: resolved.policy) } catch {
            throw .startFailed(error.message, exitCode: error.exitCode)
        }
    }
}

extension RunRequest {
    /// Reads and resolves the rules: once at start, and again on every reload (the operator
    /// edits the configuration, then reloads).
    func resolver() -> @Sendable () throws(RulesError) -> ResolvedRules {
        let (rules, config, protect, defines) = (rulesPath, configPath, protect, defines)
        return { () throws(RulesError) -> ResolvedRules in
            let files = try ConfigOverlay.files(rules: rules, config: config)
            return try RulesConfig.resolve(rules: files.rules, config: files.config, protect: protect, defines: defines)
        }
    }

    /// The agent's hooks into the ruleset: the Rules and NftBackend API behind the closures the
    /// agent's lifecycle calls.
    func hooks(_ resolved: ResolvedRules, backend: Backend, dryRun: Bool,
               resolve: @escaping @Sendable () throws(RulesError) -> ResolvedRules) -> RulesHooks {
        // Arming runs on the agent's enforcement queue only; one libnftables context serves it.
        let armer = Armer()
        // Made now, not at the first attack: the context's first use reads nft's cache, which
        // would add tens of milliseconds to the first arming.
        if !dryRun { try? armer.prepare() }
        let table = AgentRuleset()
        let kernelCounters = KernelCounters()
        let (hook, applyRules) = (hook, applyRules)
        return RulesHooks(
            apply: {
                do throws(NftError) { return try table.apply(resolved, hook: hook, backend: backend) } catch {
                    throw RulesFailure(error)
                }
            },
            reload: {
                // Pure: resolving reads the file only; the agent applies the plan after checking it.
                let fresh: ResolvedRules
                do throws(RulesError) { fresh = try resolve() } catch {
                    throw RulesFailure(message: "\(error)", exitCode: error.isUnreadableFile ? 1 : 3)
                }
                let flowspec: FlowspecConfig?
                do throws(FlowspecConfigError) {
                    flowspec = try FlowspecConfig(values: fresh.values, protected: fresh.policy.protected)
                } catch {
                    throw RulesFailure(message: "\(fresh.file.name): \(error)", exitCode: 3)
                }
                return ReloadPlan(policy: fresh.policy, queues: fresh.queues.first...fresh.queues.last,
                                  armedTimeout: fresh.armedTimeout, flowspec: flowspec, apply: {
                    guard applyRules else { return }
                    do throws(NftError) { _ = try table.apply(fresh, hook: hook, backend: backend) } catch { throw RulesFailure(error) }
                })
            },
            release: { keep in
                do throws(NftError) { return try table.release(keep: keep) } catch { throw RulesFailure(error) }
            },
            arm: { prefix, timeout, renew in
                // Dry-run changes no verdict anywhere, the kernel's included: report only.
                if dryRun { return }
                try armer.arm(prefix, timeout: timeout, renew: renew)
            },
            missing: {
                do throws(NftError) {
                    let c = try table.check()
                    if let other = c.takenOverBy { return .takenOver(by: other.description) }
                    return c.missing.map { .missing($0) } ?? .present
                } catch { throw RulesFailure(error) }
            },
            reapply: {
                do throws(NftError) { try table.reapply() } catch { throw RulesFailure(error) }
            },
            kernelCounters: {
                do throws(NftError) {
                    return try kernelCounters.read().map {
                        KernelCount(verdict: $0.verdict, reason: $0.reason, family: $0.family, packets: $0.packets, bytes: $0.bytes)
                    }
                } catch { throw RulesFailure(error) }
            },
            armRST: { prefix, timeout, renew in
                if dryRun { return }
                try armer.arm(prefix, timeout: timeout, renew: renew, rst: true)
            })
    }
}

/// A rules or nft failure with its documented exit code (3: nft rejected the rules).
struct RulesFailure: Error, ExitCoded, CustomStringConvertible {
    var message: String
    var exitCode: Int32
    init(message: String, exitCode: Int32) { self.message = message; self.exitCode = exitCode }
    init(_ e: NftError) { message = e.message; exitCode = e.isRulesError ? 3 : 1 }
    var description: String { message }
}

/// The libnftables context for arming, made once (at start, or on first use). Its calls come
/// from the enforcement queue; the lock makes that a checked fact, uncontended in practice.
final class Armer: Sendable {
    private let victims = Mutex<ArmedVictims?>(nil)

    func prepare() throws(NftError) {
        try victims.withLock { v throws(NftError) in
            if v == nil { v = try ArmedVictims() }
        }
    }

    func arm(_ prefix: CIDR, timeout: Double, renew: Bool, rst: Bool = false) throws(NftError) {
        try victims.withLock { v throws(NftError) in
            if v == nil { v = try ArmedVictims() }
            try v!.arm(prefix, timeout: timeout, renew: renew, rst: rst)
        }
    }
}
