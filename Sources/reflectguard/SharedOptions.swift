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
    static let policy: [OptionSpec] = [rules, protect, define, mode]
}
