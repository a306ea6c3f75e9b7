import Rules
#if canImport(Glibc)
import Glibc
#endif

/// Options that several commands share. Which command takes which option is the table in each
/// command's spec; the definitions live here once.
enum SharedOptions {
    static let rules = OptionSpec(name: "--rules", value: "FILE",
        help: "nftables rules file (default: the embedded nft/reflectguard.nft).")
    static let protect = OptionSpec(name: "--protect", value: "CIDR",
        help: "Add a protected network, IPv4 or IPv6.", repeatable: true)
    static let define = OptionSpec(name: "-D", value: "NAME=VALUE",
        help: "Override a define of the rules file.", repeatable: true)
    static let mode = OptionSpec(name: "--mode", value: "symmetric|ingress-only",
        help: "Both directions visible (default) or inbound only.")
    static let queue = OptionSpec(name: "--queue", value: "SPEC",
        help: "Queue number N or range N:M, one worker per queue (default 0).")
    static let config = OptionSpec(name: "--config", value: "FILE",
        help: "'define NAME = VALUE' lines layered over the rules (default \(ConfigOverlay.defaultPath) "
            + "if present and no --rules; 'none': skip it).")
    static let policy: [OptionSpec] = [rules, config, protect, define, mode]
    static let hook = OptionSpec(name: "--hook", value: "router|host",
        help: "Forwarded traffic (default) or this host's own.")
    static let backend = OptionSpec(name: "--backend", value: "auto|nft|xt",
        help: "How packets reach the agent: nft queue, xtables NFQUEUE on marked packets, or probe (default auto).")

    /// `-D`, with `--queue SPEC` folded in as the `queue` define.
    static func defines(_ a: Arguments, _ spec: CommandSpec) throws(CommandExit) -> [String] {
        var defines = a.all("-D")
        if let q = a.value("--queue") {
            guard QueueRange(q) != nil, !q.contains("-") else {
                throw .usage("--queue '\(q)': expected a queue number N or a range N:M", spec)
            }
            defines.append("queue=\(q)")
        }
        return defines
    }

    /// `--hook`, default router.
    static func hook(_ a: Arguments, _ spec: CommandSpec) throws(CommandExit) -> Hook {
        guard let h = a.value("--hook") else { return .router }
        guard let v = Hook(rawValue: h) else { throw .usage("--hook '\(h)': expected router or host", spec) }
        return v
    }

    /// `--backend`; nil for auto (the caller probes the kernel).
    static func backend(_ a: Arguments, _ spec: CommandSpec) throws(CommandExit) -> Backend? {
        switch a.value("--backend") ?? "auto" {
        case "nft": return .nft
        case "xt": return .xt
        case "auto": return nil
        case let other: throw .usage("--backend '\(other)': expected auto, nft or xt", spec)
        }
    }

    /// `ConfigOverlay.files` then `RulesConfig.resolve`.
    static func resolve(_ a: Arguments, defines: [String]) throws(RulesError) -> ResolvedRules {
        let files = try ConfigOverlay.files(rules: a.value("--rules"), config: a.value("--config"))
        return try RulesConfig.resolve(rules: files.rules, config: files.config, protect: a.all("--protect"),
                                       defines: defines)
    }
}
