import VerdictEngine

/// Every define ReflectGuard reads, with what it may hold: one table, checked in every command
/// (`score`, `run`, `nft generate|check|apply`) before nft sees the text, so `score` refuses what
/// `run` would, without nft or CAP_NET_ADMIN. A value outside its range is refused, never clamped.
/// A define the table does not know is the operator's own and nft's business.
///
/// To add a define: one row in `kinds` (a test checks that every define of the embedded ruleset
/// has one), and, if the engine needs it, one read in `PolicyBuilder`.
public enum DefineTable {
    public enum Kind: Sendable, Equatable {
        /// A set `{ … }` of prefixes of one family (or one prefix).
        case addresses(ipv6: Bool)
        /// A set of interface names.
        case interfaces
        /// A queue number `N` or range `N-M`, 0…65535.
        case queues
        /// A non-zero 32-bit packet mark, `0x…` or decimal.
        case mark
        case choice([String])
        /// A decimal whole number without sign or leading zero, in the range.
        case count(ClosedRange<UInt64>)
        /// An nft time (`131s`, `2m11s`, `500ms`, units required), in milliseconds.
        case time(ClosedRange<UInt64>)
        /// A port range `LOW-HIGH`, 1…65535.
        case ports
        /// A set `{ … }` of ports and port ranges, 1…65535.
        case portSet
        /// One address, IPv4 or IPv6 (no prefix length), or `""` for none.
        case optionalAddress
        /// `auto` or an IPv4 address (a BGP identifier).
        case routerID
        /// A quoted string of printable ASCII, `""` included.
        case quoted
    }

    /// Packets per second and bursts. nft's `limit rate` takes a 64-bit rate and a 32-bit burst;
    /// a billion a second is above any link's packet rate (100 Gb/s carries about 150 Mpps of
    /// minimum-size frames), so a larger value is a typo, not a policy.
    static let rates: ClosedRange<UInt64> = 1...1_000_000_000
    /// Kernel timeouts count in jiffies (10 ms at HZ=100), so below 10 ms the kernel's and the
    /// agent's expiry would differ; `0s` means "never expires" to nft. A day is far beyond any
    /// handshake (a Linux client gives up on its SYN after 131 s) or arming period.
    static let times: ClosedRange<UInt64> = 10...86_400_000
    /// Tracked SYNs per worker. The agent maps its table up front at 73 bytes per SYN (BENCHMARKS.md,
    /// engine table), one table per queue: 2^24 is 1.2 GiB per queue, 16 times the default. Past
    /// that a typo (`syn_table_size=10485760000`) would pass and then abort the agent on its
    /// allocation after `run` has applied the rules; the kernel's set `size` is 32-bit as well.
    static let synTableSizes: ClosedRange<UInt64> = 1...16_777_216

    public static let kinds: [String: Kind] = [
        "protected_v4": .addresses(ipv6: false),
        "protected_v6": .addresses(ipv6: true),
        "allowlist_v4": .addresses(ipv6: false),
        "allowlist_v6": .addresses(ipv6: true),
        "track_full_hosts_v4": .addresses(ipv6: false),
        "track_full_hosts_v6": .addresses(ipv6: true),
        "track_full_ports": .portSet,
        "inside_ifaces": .interfaces,
        "outside_ifaces": .interfaces,
        "queues": .queues,
        "queue_mark": .mark,
        "mode": .choice(Mode.allCases.map(\.rawValue)),
        "track": .choice(Track.allCases.map(\.rawValue)),
        "kernel_enforce": .choice(["armed", "always", "off"]),
        "state": .choice(StateSource.allCases.map(\.rawValue)),
        // Up to a second: a hold occupies a queue slot, and a SYN-ACK held longer than a client's
        // first SYN retransmission (1 s) only costs what it was meant to save. 0ms: no holding.
        "ct_wait": .time(0...1000),
        "ct_miss": .choice(ConntrackMiss.allCases.map(\.rawValue)),
        "ct_sync_iface": .interfaces,
        "ct_armed_rate": .count(rates),
        "ct_armed_burst": .count(rates),
        "kernel_path": .choice(["auto", "xdp", "nft"]),
        "ephemeral_ports": .ports,
        "rst_rate": .count(rates),
        "rst_burst": .count(rates),
        "rst_prefix_rate": .count(rates),
        "rst_prefix_burst": .count(rates),
        "rst_network_rate": .count(rates),
        "rst_network_burst": .count(rates),
        // A factor of a baseline: past a thousand no flood would ever start an attack.
        "rst_attack_factor": .count(1...1000),
        "rst_attack_floor": .count(rates),
        "rst_network_attack_floor": .count(rates),
        "rst_hold_rate": .count(rates),
        "rst_warmup": .time(times),
        "established_horizon": .time(times),
        // At least a second: the kernel's set timeout is in whole seconds at best.
        "learn_interval": .time(1000...86_400_000),
        "rst_armed_rate": .count(rates),
        "rst_armed_burst": .count(rates),
        "backscatter_rate": .count(rates),
        "backscatter_burst": .count(rates),
        "attack_rate": .count(rates),
        "syn_horizon": .time(times),
        "synack_horizon": .time(times),
        "armed_timeout": .time(times),
        "score_threshold": .count(0...100),
        "syn_table_size": .count(synTableSizes),
        // BGP Flowspec escalation. AS numbers are 32-bit (RFC 6793); 0 = not set.
        "flowspec_peer": .optionalAddress,
        "flowspec_peer_as": .count(0...4_294_967_295),
        "flowspec_local_as": .count(0...4_294_967_295),
        "flowspec_router_id": .routerID,
        "flowspec_trigger": .count(rates),
        "flowspec_hold": .time(times),
        "flowspec_withdraw": .time(times),
        // Bytes per second, carried as a 32-bit float: a terabyte a second is past any link.
        "flowspec_rate": .count(0...1_000_000_000_000),
        "flowspec_max_rules": .count(1...1000),
        // Never 0/0: a /8 or a /16 is as wide as an escalation may reach.
        "flowspec_widest_v4": .count(8...32),
        "flowspec_widest_v6": .count(16...128),
        // Source ports in a SYN-ACK route's match (0: never), and the percentage of the flood
        // they must carry: below a half a port match would leave most of the flood unshed.
        "flowspec_max_ports": .count(0...16),
        "flowspec_port_share": .count(50...100),
        "flowspec_speaker": .choice(["gobgpd", "external"]),
        "flowspec_api": .quoted,
    ]

    /// A checked define's value as a number: a count as itself, a time in seconds; nil for a
    /// define of another kind or one the values lack. For targets that read their own defines
    /// (Flowspec) from `ResolvedRules.values`, after the policy build checked every value.
    public static func number(_ name: String, in values: [String: String]) -> Double? {
        guard let v = values[name], let kind = kinds[name] else { return nil }
        switch kind {
        case .count(let range): return (try? NftValue.count(v, in: range)).map { Double($0) }
        case .time(let range): return (try? NftValue.milliseconds(v, in: range)).map { Double($0) / 1000 }
        default: return nil
        }
    }

    /// A quoted define's text without its quotes (`""` → empty).
    public static func unquoted(_ value: String) -> String {
        value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") ? String(value.dropFirst().dropLast()) : value
    }

    /// Checks a define's value (references already resolved) against its row; nothing for a
    /// define the table does not know.
    static func check(_ name: String, _ value: String) throws(ValueError) {
        guard let kind = kinds[name] else { return }
        switch kind {
        case .addresses(let ipv6): _ = try NftValue.prefixes(value, ipv6: ipv6)
        case .interfaces: _ = try NftValue.interfaces(value)
        case .queues: _ = try NftValue.queues(value)
        case .mark: _ = try NftValue.mark(value)
        case .choice(let allowed): _ = try NftValue.choice(value, allowed)
        case .count(let range): _ = try NftValue.count(value, in: range)
        case .time(let range): _ = try NftValue.milliseconds(value, in: range)
        case .ports: _ = try NftValue.ports(value)
        case .portSet: _ = try NftValue.portSet(value)
        case .optionalAddress:
            guard value != "\"\"" else { return }
            guard !value.contains("/"), CIDR(value) != nil else {
                throw ValueError(message: "'\(value)' is not an IPv4 or IPv6 address (or \"\" for none)")
            }
        case .routerID:
            guard value != "auto" else { return }
            guard !value.contains(":"), !value.contains("/"), CIDR(value) != nil else {
                throw ValueError(message: "'\(value)' is not auto or an IPv4 address")
            }
        case .quoted:
            guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\""),
                  value.utf8.dropFirst().dropLast().allSatisfy({ $0 >= 0x20 && $0 < 0x7f && $0 != 0x22 && $0 != 0x5c }) else {
                throw ValueError(message: "'\(value)' is not a quoted string of printable characters")
            }
        }
    }
}

/// A value refused, and where in the value (byte offset) the refused part starts.
struct ValueError: Error {
    var message: String
    var offset = 0
}

/// Parsers for the values nft and the agent must read alike. nft reads numbers with strtoull
/// base 0: `010` is 8 and `0x10` is 16 in a rate, burst, port, set size, queue number or mark
/// (checked with `nft -f` and `nft list` on Linux 6.18), and Swift's integer parsing takes a
/// sign nft's grammar refuses (`+5`). So numbers here are plain decimal digits without a leading
/// zero; only the mark, which nft prints in hex, may be written `0x…`.
enum NftValue {
    /// Decimal digits only, no sign, no leading zero ("0" alone is fine), in `range`.
    static func count(_ text: some StringProtocol, in range: ClosedRange<UInt64>) throws(ValueError) -> UInt64 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw ValueError(message: "'\(text)' is not a whole number (decimal digits, no sign)")
        }
        guard text.utf8.count == 1 || text.utf8.first != 0x30 else {
            throw ValueError(message: "'\(text)' has a leading zero, which nft reads as octal")
        }
        // UInt64(_:) is nil past 2^64-1: an overflow is out of range, never a trap.
        guard let n = UInt64(text), range.contains(n) else {
            throw ValueError(message: "'\(text)' is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    /// nft's time syntax: `[Nd][Nh][Nm][Ns][Nms]`, at least one part, in that order, each once,
    /// lower case (nft's scanner; `60` without a unit is a syntax error in a set's `timeout`).
    /// Leading zeros are decimal here to nft too (`1m010s` loads as 1m10s).
    static func milliseconds(_ text: String, in range: ClosedRange<UInt64>) throws(ValueError) -> UInt64 {
        let bad = ValueError(message: "'\(text)' is not a time such as 131s, 2m11s or 500ms (units d, h, m, s, ms, in that order)")
        let units: [(String, UInt64)] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)]
        let b = Array(text.utf8)
        var i = 0
        var nextUnit = 0
        var total: UInt64 = 0
        var overflow = false
        guard !b.isEmpty else { throw bad }
        while i < b.count {
            let digitsStart = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            guard i > digitsStart, i - digitsStart <= 19 else { throw bad }
            var n: UInt64 = 0
            for d in b[digitsStart..<i] { n = n * 10 + UInt64(d - 0x30) }   // ≤ 19 digits: no overflow
            let unit: Int
            if i + 1 < b.count, b[i] == 0x6d, b[i + 1] == 0x73 { unit = 4; i += 2 }   // "ms"
            else if i < b.count, let u = units[0..<4].firstIndex(where: { $0.0.utf8.first == b[i] }) { unit = u; i += 1 }
            else { throw bad }
            guard unit >= nextUnit else { throw bad }
            nextUnit = unit + 1
            let (part, o1) = n.multipliedReportingOverflow(by: units[unit].1)
            let (sum, o2) = total.addingReportingOverflow(part)
            overflow = overflow || o1 || o2
            total = sum
        }
        guard !overflow, range.contains(total) else {
            throw ValueError(message: "'\(text)' is out of range \(show(range.lowerBound))...\(show(range.upperBound))")
        }
        return total
    }

    /// Milliseconds the way nft writes them, for messages.
    static func show(_ ms: UInt64) -> String {
        if ms % 86_400_000 == 0 { return "\(ms / 86_400_000)d" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// `N`, `N-M` or (command line) `N:M`, N ≤ M.
    static func queues(_ text: String) throws(ValueError) -> QueueRange {
        let parts = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        do throws(ValueError) {
            guard parts.count == 1 || parts.count == 2 else { throw ValueError(message: "one number or two") }
            let a = try count(parts[0], in: 0...65535), b = try count(parts[parts.count - 1], in: 0...65535)
            guard a <= b else { throw ValueError(message: "N is above M") }
            return QueueRange(first: UInt16(a), last: UInt16(b))
        } catch {
            throw ValueError(message: "'\(text)' is not a queue number N or range N-M (\(error.message))")
        }
    }

    /// Non-zero, 32 bits: `0x` and 1 to 8 hex digits, or a decimal number.
    static func mark(_ text: String) throws(ValueError) -> UInt32 {
        if text.hasPrefix("0x") {
            let digits = text.dropFirst(2)
            guard !digits.isEmpty, digits.count <= 8, digits.allSatisfy({ $0.isASCII && $0.isHexDigit }),
                  let m = UInt32(digits, radix: 16), m != 0 else {
                throw ValueError(message: "'\(text)' is not a non-zero 32-bit mark")
            }
            return m
        }
        do throws(ValueError) { return UInt32(try count(text, in: 1...UInt64(UInt32.max))) } catch {
            throw ValueError(message: "'\(text)' is not a non-zero 32-bit mark (\(error.message))")
        }
    }

    static func choice(_ text: String, _ allowed: [String]) throws(ValueError) -> String {
        guard allowed.contains(text) else {
            throw ValueError(message: "'\(text)' is not one of \(allowed.joined(separator: ", "))")
        }
        return text
    }

    /// `LOW-HIGH`, blanks around the dash allowed.
    static func ports(_ text: String) throws(ValueError) -> ClosedRange<UInt16> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw ValueError(message: "'\(text)' is not a port range LOW-HIGH") }
        do throws(ValueError) {
            let a = try count(parts[0].trimmingBlanksSub(), in: 1...65535)
            let b = try count(parts[1].trimmingBlanksSub(), in: 1...65535)
            guard a <= b else { throw ValueError(message: "LOW is above HIGH") }
            return UInt16(a)...UInt16(b)
        } catch {
            throw ValueError(message: "'\(text)' is not a port range LOW-HIGH (\(error.message))")
        }
    }

    /// The elements of a set value: one `{ a, b }` (sets inside it, as a `$name` reference
    /// expands, are flattened) or a bare `a, b`. `RulesConfig.elements(of:)` splits at every brace
    /// and comma, so without this `{ 198.18.2.0/24 } 10.0.0.0/8` or `{ a } }` was read as a set
    /// of what came before the stray part while nft refused the text (or, from `-D`, `score`
    /// protected less than `run` would have loaded). A quote left open would end where nft and the
    /// agent disagree, so it is refused too.
    static func setElements(_ value: String) throws(ValueError) -> [(text: String, offset: Int)] {
        let b = Array(value.utf8)
        let blank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d }
        guard let first = b.firstIndex(where: { !blank($0) }) else { return [] }
        let last = b.lastIndex(where: { !blank($0) })!
        if let q = b.firstIndex(of: 0x22), b.count(where: { $0 == 0x22 }) % 2 == 1 {
            throw ValueError(message: "a quote is left open", offset: q)
        }
        var depth = 0
        var previous: UInt8 = 0x2c   // as if after a comma: a value may start with `{`
        for i in first...last where !blank(b[i]) {
            let c = b[i]
            if c == 0x7b {
                guard previous == 0x7b || previous == 0x2c, depth > 0 || i == first, b[first] == 0x7b else {
                    throw ValueError(message: "this '{' starts no set or element of one (a set is one '{ a, b }')", offset: i)
                }
                depth += 1
            } else if c == 0x7d {
                guard depth > 0 else {
                    throw ValueError(message: "this '}' closes no set", offset: i)
                }
                depth -= 1
                if depth == 0, i != last {
                    throw ValueError(message: "text after the set's closing '}' (a set is one '{ a, b }')",
                                     offset: b[(i + 1)...].firstIndex(where: { !blank($0) })!)
                }
            } else if previous == 0x7d, c != 0x2c {
                throw ValueError(message: "no comma after this '}'", offset: i)
            }
            previous = c
        }
        guard depth == 0 else { throw ValueError(message: "a '{' is left open", offset: first) }
        return RulesConfig.elements(of: value)
    }

    /// The elements of a port set (`{ 179, 5432-5433 }`), each a port or a range.
    static func portSet(_ value: String) throws(ValueError) -> [ClosedRange<UInt16>] {
        var out: [ClosedRange<UInt16>] = []
        for (text, offset) in try setElements(value) {
            do throws(ValueError) {
                if text.contains("-") {
                    out.append(try ports(text))
                } else {
                    let port = UInt16(try count(text, in: 1...65535))
                    out.append(port...port)
                }
            } catch {
                throw ValueError(message: "'\(text)' is not a port or port range LOW-HIGH, 1-65535 (\(error.message))", offset: offset)
            }
        }
        return out
    }

    /// The elements of an address set, each a prefix of the family.
    static func prefixes(_ value: String, ipv6: Bool) throws(ValueError) -> [CIDR] {
        var out: [CIDR] = []
        for (text, offset) in try setElements(value) {
            let c: CIDR
            do { c = try CIDR(parsing: text) } catch {
                throw ValueError(message: "\(error.description) (an \(ipv6 ? "IPv6" : "IPv4") address or prefix)", offset: offset)
            }
            guard text.contains(":") == ipv6 else {
                throw ValueError(message: "'\(text)' is \(ipv6 ? "IPv4" : "IPv6"), this set takes \(ipv6 ? "IPv6" : "IPv4")",
                                 offset: offset)
            }
            out.append(c)
        }
        return out
    }

    /// Interface names, bare or quoted: 1 to 15 bytes (IFNAMSIZ is 16 with the terminating NUL),
    /// printable ASCII without what the kernel refuses in a name (`/`, `:`, blanks) or what would
    /// end the name in nft's text (quotes, braces, commas, `;`, `#`).
    static func interfaces(_ value: String) throws(ValueError) -> [String] {
        var out: [String] = []
        for (text, offset) in try setElements(value) {
            var n = Substring(text)
            if n.hasPrefix("\""), n.hasSuffix("\""), n.count >= 2 { n = n.dropFirst().dropLast() }
            let refused = Set("/: \t\"\\{},;#".utf8)
            guard !n.isEmpty, n.utf8.count < 16, n != ".", n != "..",
                  n.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && !refused.contains($0) }) else {
                throw ValueError(message: "'\(text)' is not an interface name", offset: offset)
            }
            out.append(String(n))
        }
        return out
    }
}
