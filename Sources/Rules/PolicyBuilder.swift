import VerdictEngine

/// Turns the defines' effective values into the engine's `Policy`, checking each value the way the
/// engine and nft need it. A define the file lacks keeps `Policy`'s default; a bad value is an
/// error at the value's position in the file (or, for an override, names the command line).
struct PolicyBuilder {
    let file: String
    let defines: [String: RulesScanner.Define]
    let overridden: Set<String>
    let values: [String: String]
    private(set) var queues = QueueRange(first: 0, last: 0)
    private(set) var queueMark: UInt32 = 0x1000_0000

    init(file: String, defines: [String: RulesScanner.Define], overridden: Set<String>, values: [String: String]) {
        self.file = file
        self.defines = defines
        self.overridden = overridden
        self.values = values
    }

    mutating func build() throws(RulesError) -> Policy {
        var p = Policy()
        p.protected = try prefixes("protected_v4", ipv6: false, into: PrefixSet())
        p.protected = try prefixes("protected_v6", ipv6: true, into: p.protected)
        p.allowlist = try prefixes("allowlist_v4", ipv6: false, into: PrefixSet())
        p.allowlist = try prefixes("allowlist_v6", ipv6: true, into: p.allowlist)
        p.trackFullHosts = try prefixes("track_full_hosts_v4", ipv6: false, into: PrefixSet())
        p.trackFullHosts = try prefixes("track_full_hosts_v6", ipv6: true, into: p.trackFullHosts)
        p.trackFullPorts = try ports("track_full_ports")
        p.insideInterfaces = try interfaces("inside_ifaces")
        p.outsideInterfaces = try interfaces("outside_ifaces")
        if let v = values["queues"] {
            guard let q = QueueRange(v) else { throw error("queues", "'\(v)' is not a queue number N or range N-M") }
            queues = q
        }
        p.queueCount = queues.count
        if let v = values["queue_mark"] {
            let digits = v.hasPrefix("0x") ? String(v.dropFirst(2)) : v
            guard let m = UInt32(digits, radix: v.hasPrefix("0x") ? 16 : 10), m != 0 else {
                throw error("queue_mark", "'\(v)' is not a non-zero 32-bit mark")
            }
            queueMark = m
        }
        if let v = values["mode"] {
            guard let m = Mode(rawValue: v) else { throw error("mode", "'\(v)' is not a mode (symmetric, ingress-only)") }
            p.mode = m
        }
        if let v = values["track"] {
            guard let t = Track(rawValue: v) else { throw error("track", "'\(v)' is not handshake or full") }
            p.track = t
        }
        if let v = values["kernel_enforce"], !["armed", "always", "off"].contains(v) {
            throw error("kernel_enforce", "'\(v)' is not armed, always or off")
        }
        if let v = values["ephemeral_ports"] {
            let parts = v.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let a = UInt16(parts[0].trimmingBlanksSub()), let b = UInt16(parts[1].trimmingBlanksSub()),
                  a <= b else { throw error("ephemeral_ports", "'\(v)' is not a port range LOW-HIGH") }
            p.ephemeralPorts = a...b
        }
        p.rstRate = try count("rst_rate", default: p.rstRate)
        p.rstBurst = try count("rst_burst", default: p.rstBurst)
        p.rstPrefixRate = try count("rst_prefix_rate", default: p.rstPrefixRate)
        p.rstPrefixBurst = try count("rst_prefix_burst", default: p.rstPrefixBurst)
        p.rstNetworkRate = try count("rst_network_rate", default: p.rstNetworkRate)
        p.rstNetworkBurst = try count("rst_network_burst", default: p.rstNetworkBurst)
        p.rstAttackFactor = try count("rst_attack_factor", default: p.rstAttackFactor)
        p.rstAttackFloor = try count("rst_attack_floor", default: p.rstAttackFloor)
        p.rstNetworkAttackFloor = try count("rst_network_attack_floor", default: p.rstNetworkAttackFloor)
        p.rstHoldRate = try count("rst_hold_rate", default: p.rstHoldRate)
        p.rstWarmup = try duration("rst_warmup", default: p.rstWarmup)
        p.establishedHorizon = try duration("established_horizon", default: p.establishedHorizon)
        p.backscatterRate = try count("backscatter_rate", default: p.backscatterRate)
        p.backscatterBurst = try count("backscatter_burst", default: p.backscatterBurst)
        p.attackRate = try count("attack_rate", default: p.attackRate)
        p.synTableCapacity = Int(try count("syn_table_size", default: Double(p.synTableCapacity)))
        p.synHorizon = try duration("syn_horizon", default: p.synHorizon)
        p.synackHorizon = try duration("synack_horizon", default: p.synackHorizon)
        _ = try duration("armed_timeout", default: 60)
        if let v = values["score_threshold"] {
            guard let n = Int(v), (0...100).contains(n) else {
                throw error("score_threshold", "'\(v)' is not a score from 0 to 100")
            }
            p.scoreThreshold = n
        }
        return p
    }

    private func location(_ name: String, offset: Int = 0) -> SourceLocation? {
        guard !overridden.contains(name), let d = defines[name] else { return nil }
        // Offsets inside a value are exact only on a one-line value.
        return SourceLocation(file: file, line: d.line, column: d.column + (d.lineCount == 1 ? offset : 0))
    }

    private func error(_ name: String, _ message: String, offset: Int = 0) -> RulesError {
        if overridden.contains(name) {
            return RulesError("\(name) (from the command line): \(message)", at: nil, fromCommandLine: true)
        }
        return RulesError("\(name): \(message)", at: location(name, offset: offset))
    }

    private func prefixes(_ name: String, ipv6: Bool, into set: PrefixSet) throws(RulesError) -> PrefixSet {
        var set = set
        guard let v = values[name] else { return set }
        for (text, offset) in RulesConfig.elements(of: v) {
            guard let c = CIDR(text) else {
                throw error(name, "'\(text)' is not an \(ipv6 ? "IPv6" : "IPv4") address or prefix", offset: offset)
            }
            guard text.contains(":") == ipv6 else {
                throw error(name, "'\(text)' is \(ipv6 ? "IPv4" : "IPv6"), this set takes \(ipv6 ? "IPv6" : "IPv4")",
                            offset: offset)
            }
            set.insert(c)
        }
        return set
    }

    /// A set of ports and port ranges, `{ 179, 5432-5433 }`.
    private func ports(_ name: String) throws(RulesError) -> [ClosedRange<UInt16>] {
        guard let v = values[name] else { return [] }
        var out: [ClosedRange<UInt16>] = []
        for (text, offset) in RulesConfig.elements(of: v) {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count <= 2, let a = UInt16(parts[0].trimmingBlanksSub()), a > 0,
                  let b = parts.count == 2 ? UInt16(parts[1].trimmingBlanksSub()) : a, a <= b else {
                throw error(name, "'\(text)' is not a port or port range LOW-HIGH (1-65535)", offset: offset)
            }
            out.append(a...b)
        }
        return out
    }

    private func interfaces(_ name: String) throws(RulesError) -> [String] {
        guard let v = values[name] else { return [] }
        var out: [String] = []
        for (text, offset) in RulesConfig.elements(of: v) {
            var n = Substring(text)
            if n.hasPrefix("\""), n.hasSuffix("\""), n.count >= 2 { n = n.dropFirst().dropLast() }
            // IFNAMSIZ is 16 with the terminating NUL.
            guard !n.isEmpty, n.utf8.count < 16, !n.contains(" ") else {
                throw error(name, "'\(text)' is not an interface name", offset: offset)
            }
            out.append(String(n))
        }
        return out
    }

    /// A positive whole number: nft's `limit rate` and `burst` take integers only.
    private func count(_ name: String, default value: Double) throws(RulesError) -> Double {
        guard let v = values[name] else { return value }
        guard let n = UInt32(v), n > 0 else { throw error(name, "'\(v)' is not a positive whole number") }
        return Double(n)
    }

    /// An nft time value: `131s`, `2m11s`, `1h`, `500ms`, or plain seconds.
    private func duration(_ name: String, default value: Double) throws(RulesError) -> Double {
        guard let v = values[name] else { return value }
        guard let s = PolicyBuilder.seconds(v), s > 0 else {
            throw error(name, "'\(v)' is not a duration such as 131s, 2m11s or 500ms")
        }
        return s
    }

    static func seconds(_ text: String) -> Double? {
        if let n = UInt64(text) { return Double(n) }
        var total = 0.0
        var digits = ""
        var chars = Array(text)
        var i = 0
        guard !chars.isEmpty else { return nil }
        chars.append(" ")
        while i < chars.count - 1 {
            let c = chars[i]
            if c.isASCII, c.isNumber { digits.append(c); i += 1; continue }
            guard let n = Double(digits) else { return nil }
            digits = ""
            let unit: Double
            if c == "m", chars[i + 1] == "s" { unit = 0.001; i += 1 }
            else if c == "d" { unit = 86400 } else if c == "h" { unit = 3600 }
            else if c == "m" { unit = 60 } else if c == "s" { unit = 1 } else { return nil }
            total += n * unit
            i += 1
        }
        return digits.isEmpty ? total : nil
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
