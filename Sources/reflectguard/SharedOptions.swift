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

    /// The ruleset (`--rules`, default the embedded one) and the configuration layered over it
    /// (`--config`, default `ConfigOverlay.defaultPath` when it exists and `--rules` is not given:
    /// a whole ruleset of the operator's own replaces the built-in one and its configuration).
    static func rulesFiles(rules: String?, config: String?) throws(RulesError) -> (rules: RulesFile, config: RulesFile?) {
        let file = try rules.map { p throws(RulesError) in try RulesFile.load(path: p) } ?? .embedded
        var configPath = config
        if configPath == nil, rules == nil, access(ConfigOverlay.defaultPath, F_OK) == 0 {
            configPath = ConfigOverlay.defaultPath
        }
        guard let configPath, configPath != "none" else { return (file, nil) }
        return (file, try RulesFile.load(path: configPath))
    }

    /// `rulesFiles` then `RulesConfig.resolve`.
    static func resolve(_ a: Arguments, defines: [String]) throws(RulesError) -> ResolvedRules {
        let files = try rulesFiles(rules: a.value("--rules"), config: a.value("--config"))
        return try RulesConfig.resolve(rules: files.rules, config: files.config, protect: a.all("--protect"),
                                       defines: defines)
    }
}
