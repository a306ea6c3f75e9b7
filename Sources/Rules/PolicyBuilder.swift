import VerdictEngine

/// Turns the defines' effective values into the engine's `Policy`, checking each value the way the
/// engine and nft need it. A define the file lacks keeps `Policy`'s default; a bad value is an
/// error at the value's position in the file (or, for an override, names the command line).
struct PolicyBuilder {
    let file: String
    let defines: [String: RulesScanner.Define]
    let overridden: Set<String>
    /// Values from the configuration file: their errors point into it.
    let configured: [String: ConfigOrigin]
    let values: [String: String]
    private(set) var queues = QueueRange(first: 0, last: 0)
    private(set) var queueMark: UInt32 = 0x1000_0000
    /// Seconds an armed victim prefix stays armed (`armed_timeout`).
    private(set) var armedTimeout: Double = 60

    init(file: String, defines: [String: RulesScanner.Define], overridden: Set<String>,
         configured: [String: ConfigOrigin] = [:], values: [String: String]) {
        self.file = file
        self.defines = defines
        self.overridden = overridden
        self.configured = configured
        self.values = values
    }

    mutating func build() throws(RulesError) -> Policy {
        // Every define the table knows, in file order, so the first bad value is the one reported.
        for d in defines.values.sorted(by: { $0.line < $1.line }) {
            guard let v = values[d.name] else { continue }
            do throws(ValueError) { try DefineTable.check(d.name, v) } catch {
                throw self.error(d.name, error.message, offset: error.offset)
            }
        }
        var p = Policy()
        p.protected = try prefixSet("protected_v4", "protected_v6")
        p.allowlist = try prefixSet("allowlist_v4", "allowlist_v6")
        p.trackFullHosts = try prefixSet("track_full_hosts_v4", "track_full_hosts_v6")
        p.trackFullPorts = try read("track_full_ports", NftValue.portSet) ?? []
        p.insideInterfaces = try read("inside_ifaces", NftValue.interfaces) ?? []
        p.outsideInterfaces = try read("outside_ifaces", NftValue.interfaces) ?? []
        queues = try read("queues", NftValue.queues) ?? queues
        p.queueCount = queues.count
        queueMark = try read("queue_mark", NftValue.mark) ?? queueMark
        if let m = values["mode"].flatMap(Mode.init(rawValue:)) { p.mode = m }
        if let t = values["track"].flatMap(Track.init(rawValue:)) { p.track = t }
        if let s = values["state"].flatMap(StateSource.init(rawValue:)) { p.stateSource = s }
        if let m = values["ct_miss"].flatMap(ConntrackMiss.init(rawValue:)) { p.conntrackMiss = m }
        p.conntrackWait = try seconds("ct_wait") ?? p.conntrackWait
        if let sync = try read("ct_sync_iface", NftValue.interfaces) {
            guard sync.count <= 1 else { throw error("ct_sync_iface", "one interface at most (conntrackd's sync link)") }
            p.conntrackSyncInterface = sync.first
        }
        // The pending-SYN check drops every SYN-ACK whose SYN this router did not forward: on an
        // ingress-only router that is every legitimate one. conntrack's check (state = conntrack)
        // sees what replication brings.
        if p.mode == .ingressOnly, p.stateSource == .local, values["kernel_enforce"] == "always" {
            throw error("kernel_enforce", "'always' with mode ingress-only and state local would drop every legitimate SYN-ACK: this router never sees the SYNs the kernel check needs (use armed, off, or state = conntrack)")
        }
        p.ephemeralPorts = try read("ephemeral_ports", NftValue.ports) ?? p.ephemeralPorts
        p.rstRate = try rate("rst_rate") ?? p.rstRate
        p.rstBurst = try rate("rst_burst") ?? p.rstBurst
        p.rstPrefixRate = try rate("rst_prefix_rate") ?? p.rstPrefixRate
        p.rstPrefixBurst = try rate("rst_prefix_burst") ?? p.rstPrefixBurst
        p.rstNetworkRate = try rate("rst_network_rate") ?? p.rstNetworkRate
        p.rstNetworkBurst = try rate("rst_network_burst") ?? p.rstNetworkBurst
        p.rstAttackFactor = try rate("rst_attack_factor") ?? p.rstAttackFactor
        p.rstAttackFloor = try rate("rst_attack_floor") ?? p.rstAttackFloor
        p.rstNetworkAttackFloor = try rate("rst_network_attack_floor") ?? p.rstNetworkAttackFloor
        p.rstHoldRate = try rate("rst_hold_rate") ?? p.rstHoldRate
        p.rstWarmup = try seconds("rst_warmup") ?? p.rstWarmup
        p.establishedHorizon = try seconds("established_horizon") ?? p.establishedHorizon
        p.learnInterval = try seconds("learn_interval") ?? p.learnInterval
        p.rstArmedRate = try rate("rst_armed_rate") ?? p.rstArmedRate
        p.rstArmedBurst = try rate("rst_armed_burst") ?? p.rstArmedBurst
        p.backscatterRate = try rate("backscatter_rate") ?? p.backscatterRate
        p.backscatterBurst = try rate("backscatter_burst") ?? p.backscatterBurst
        p.attackRate = try rate("attack_rate") ?? p.attackRate
        // Bounded by the table (DefineTable.synTableSizes), so the conversion cannot trap.
        p.synTableCapacity = try rate("syn_table_size").map { Int($0) } ?? p.synTableCapacity
        p.synHorizon = try seconds("syn_horizon") ?? p.synHorizon
        p.synackHorizon = try seconds("synack_horizon") ?? p.synackHorizon
        armedTimeout = try seconds("armed_timeout") ?? armedTimeout
        p.scoreThreshold = try read("score_threshold") { v throws(ValueError) in Int(try NftValue.count(v, in: 0...100)) }
            ?? p.scoreThreshold
        return p
    }

    /// The define's value parsed, nil when the file has no such define.
    private func read<T>(_ name: String, _ parse: (String) throws(ValueError) -> T) throws(RulesError) -> T? {
        guard let v = values[name] else { return nil }
        do throws(ValueError) { return try parse(v) } catch { throw self.error(name, error.message, offset: error.offset) }
    }

    /// The prefixes of an IPv4 and an IPv6 set define, each once.
    private func prefixSet(_ v4: String, _ v6: String) throws(RulesError) -> PrefixSet {
        var set = PrefixSet()
        for (name, ipv6) in [(v4, false), (v6, true)] {
            for c in try read(name, { v throws(ValueError) in try NftValue.prefixes(v, ipv6: ipv6) }) ?? [] { set.insert(c) }
        }
        return set
    }

    /// A count of the table's range (rates, bursts, sizes) as the engine's Double.
    private func rate(_ name: String) throws(RulesError) -> Double? {
        guard case .count(let range)? = DefineTable.kinds[name] else { return nil }
        return try read(name) { v throws(ValueError) in Double(try NftValue.count(v, in: range)) }
    }

    private func seconds(_ name: String) throws(RulesError) -> Double? {
        guard case .time(let range)? = DefineTable.kinds[name] else { return nil }
        return try read(name) { v throws(ValueError) in Double(try NftValue.milliseconds(v, in: range)) / 1000 }
    }

    private func location(_ name: String, offset: Int = 0) -> SourceLocation? {
        if let origin = configured[name] { return origin.location(offset: offset, used: values[name]) }
        guard !overridden.contains(name), let d = defines[name] else { return nil }
        // Offsets inside a value are exact only on a one-line value written out (no `$name` in it).
        let exact = d.lineCount == 1 && values[name] == d.value
        return SourceLocation(file: file, line: d.line, column: d.column + (exact ? offset : 0))
    }

    /// A value the table refuses is a rules error (exit 3) wherever it came from: from `-D` it
    /// names the define it would replace, so every command refuses it as `nft` would, at the same
    /// place, before anything is loaded.
    private func error(_ name: String, _ message: String, offset: Int = 0) -> RulesError {
        if overridden.contains(name) {
            let at = defines[name].map { SourceLocation(file: file, line: $0.line, column: $0.column) }
            return RulesError("\(name) (from -D \(name)=\(values[name] ?? "")): \(message)", at: at)
        }
        return RulesError("\(name): \(message)", at: location(name, offset: offset))
    }
}

extension Substring {
    func trimmingBlanksSub() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
