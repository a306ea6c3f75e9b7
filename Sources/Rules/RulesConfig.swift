import VerdictEngine

/// Where the rules hook in: a router judging forwarded traffic, or a host protecting itself.
public enum Hook: String, Sendable, CaseIterable {
    case router
    case host
}

/// How packets reach the agent: the nft `queue` expression, the xtables NFQUEUE target on marked
/// packets (kernels without CONFIG_NFT_QUEUE), or not at all (the kernel-only ruleset).
public enum Backend: String, Sendable, CaseIterable {
    case nft
    case xt
    case none
}

/// NFQUEUE numbers: one queue `N` or a balanced range `N-M` (`N:M` on the command line).
public struct QueueRange: Equatable, Sendable, CustomStringConvertible {
    public var first: UInt16
    public var last: UInt16

    public init(first: UInt16, last: UInt16) {
        self.first = first
        self.last = last
    }

    /// `N`, `N:M` or `N-M` with N ≤ M, decimal without a leading zero (nft's `queue num 010` is 8).
    public init?(_ text: String) {
        guard let q = try? NftValue.queues(text) else { return nil }
        self = q
    }

    public var count: Int { Int(last) - Int(first) + 1 }
    /// nft's spelling: `0` or `0-3`.
    public var description: String { first == last ? "\(first)" : "\(first)-\(last)" }
}

/// One xtables rule that queues the packets nft marked (xt backend), in the `mangle` table:
/// its chains run at priority -150, after ReflectGuard's nft chains (-160) and before the
/// operator's `filter` rules (0). An NFQUEUE accept ends the packet's walk through the chain
/// that queued it, so queueing from `filter` would skip the operator's later filter rules.
/// `arguments` follow `-t mangle -I CHAIN 1` / `-D CHAIN` as an argv array.
public struct XtablesRule: Equatable, Sendable {
    public var ipv6: Bool
    public var table: String
    public var chain: String
    public var arguments: [String]

    public init(ipv6: Bool, table: String = "mangle", chain: String, arguments: [String]) {
        self.ipv6 = ipv6
        self.table = table
        self.chain = chain
        self.arguments = arguments
    }

    /// The comment that tags ReflectGuard's xtables rules, so `nft remove` finds them and nothing else.
    public static let tag = "reflectguard"

    public var tool: String { ipv6 ? "ip6tables-nft" : "iptables-nft" }
    /// For humans (`nft generate`): the command `apply` runs.
    public var commandLine: String { ([tool, "-t", table, "-I", chain, "1"] + arguments).joined(separator: " ") }
}

/// The rules file with the command line's overrides applied: the engine's `policy` and the text
/// for nft, both from the same values.
public struct ResolvedRules: Sendable {
    public let file: RulesFile
    /// The configuration file layered over `file`, if any (`ConfigOverlay`).
    public let config: RulesFile?
    public let policy: Policy
    public let queues: QueueRange
    public let queueMark: UInt32
    /// Seconds an armed victim prefix stays armed (`armed_timeout`, default 60).
    public let armedTimeout: Double
    /// The file's text with overridden define values substituted in place, line for line.
    public let text: String
    /// Every define's effective value, after overrides.
    public let values: [String: String]

    fileprivate let scanner: RulesScanner
    fileprivate let substituted: [UInt8]
    fileprivate let overrides: [String: String]

    /// The text `nft apply` loads for this hook and backend: the other variants' chains blanked
    /// and scalar defines expanded (nft takes no variable in `timeout`, `limit rate`, `burst`).
    /// Line numbers stay those of the operator's file, so nft's errors point into it.
    /// `.none` is the standalone kernel-only ruleset, with `kernel_enforce` forced to `always`.
    public func render(hook: Hook, backend: Backend) -> String {
        renderMapped(hook: hook, backend: backend).text
    }

    /// `render`, plus where each expansion sits, so nft's column numbers can be mapped back to
    /// the operator's file (`RenderedRules.originalColumn`).
    public func renderMapped(hook: Hook, backend: Backend) -> RenderedRules {
        var values = self.values
        var bytes = substituted
        let scan = scanner
        if backend == .none, values["kernel_enforce"] != nil, values["kernel_enforce"] != "always" {
            values["kernel_enforce"] = "always"
            var o = overrides
            o["kernel_enforce"] = "always"
            bytes = RulesConfig.substitute(file.text, scanner, o)
        }
        var blank = Set<Int>()
        for c in scan.chains {
            guard let v = c.variant else { continue }
            let keep: Bool
            switch v.key {
            case "hook": keep = v.value == hook.rawValue
            // Conntrack's chains load only with state = conntrack: any `ct` expression in a
            // loaded ruleset makes the kernel track every flow of the namespace.
            case "state": keep = v.value == (values["state"] ?? StateSource.local.rawValue)
            default: keep = v.value == backend.rawValue
            }
            if !keep { for l in c.firstLine...c.lastLine { blank.insert(l) } }
        }
        return RulesConfig.render(bytes, scan, values, blank: blank)
    }

    /// Sets the file fills with `elements` (protected networks, allowlist): a reload flushes and
    /// refills them in the same transaction, so a network taken out of the file leaves the kernel
    /// too. Every other set (pending SYNs, armed victims, meters) keeps its contents.
    public var configuredSets: [String] { scanner.configuredSets }

    /// The xtables rules that queue marked packets (xt backend): one per hook chain and family.
    public func xtablesRules(hook: Hook) -> [XtablesRule] {
        let mark = "0x" + String(queueMark, radix: 16) + "/0x" + String(queueMark, radix: 16)
        var args = ["-m", "mark", "--mark", mark, "-m", "comment", "--comment", XtablesRule.tag, "-j", "NFQUEUE"]
        if queues.first == queues.last {
            args += ["--queue-num", "\(queues.first)"]
        } else {
            // --queue-balance hashes (saddr, daddr) symmetrically, like nft's range without fanout.
            args += ["--queue-balance", "\(queues.first):\(queues.last)"]
        }
        args.append("--queue-bypass")
        let chains = hook == .router ? ["FORWARD"] : ["INPUT", "OUTPUT"]
        var out: [XtablesRule] = []
        for v6 in [false, true] {
            for c in chains { out.append(XtablesRule(ipv6: v6, chain: c, arguments: args)) }
        }
        return out
    }
}

/// Rendered text for nft, and where scalar defines were expanded in it.
public struct RenderedRules: Sendable {
    /// One `$name` replaced by its value: columns (1-based bytes) in the rendered and original line.
    public struct Expansion: Sendable, Equatable {
        public var column: Int
        public var length: Int
        public var originalColumn: Int
        public var originalLength: Int
    }

    public var text: String
    /// By line number; lines without expansions are absent.
    public var expansions: [Int: [Expansion]]

    /// The operator's column for a column nft reports in the rendered line: inside an expanded
    /// value it is the `$name` that produced it.
    public func originalColumn(line: Int, column: Int) -> Int {
        guard let list = expansions[line] else { return column }
        var shift = 0
        for e in list {
            if column < e.column { break }
            if column < e.column + e.length { return e.originalColumn }
            shift += e.length - e.originalLength
        }
        return column - shift
    }
}

/// Builds `ResolvedRules` from a rules file and the command line's `--protect` and `-D`.
public enum RulesConfig {
    /// Command-line names that differ from the file's: `queue` is an nft keyword, so the file's
    /// define is `queues`.
    static let aliases = ["queue": "queues"]

    /// Applies `protect` (CIDRs, added to `protected_v4`/`protected_v6`) and `defines`
    /// (`NAME=VALUE`, replacing the file's value) to the file, validates every value the policy
    /// needs, and returns the policy together with the text for nft.
    /// `config`, when given, is a configuration file of `define` lines layered over `rules`
    /// before the command line's values (`ConfigOverlay`); its errors name its own lines.
    public static func resolve(rules: RulesFile, config: RulesFile? = nil, protect: [String] = [],
                               defines: [String] = []) throws(RulesError) -> ResolvedRules {
        let bytes = Array(rules.text.utf8)
        let scanner = try RulesScanner(bytes: bytes, file: rules.name)
        var byName: [String: RulesScanner.Define] = [:]
        for d in scanner.defines {
            if byName[d.name] != nil {
                // nft itself refuses this; say it with the position.
                throw RulesError("'\(d.name)' is defined twice",
                                 at: SourceLocation(file: rules.name, line: d.line, column: d.column))
            }
            byName[d.name] = d
        }
        var overrides: [String: String] = [:]
        var configured: [String: ConfigOrigin] = [:]
        if let config {
            for e in try ConfigOverlay.parse(config) {
                let name = aliases[e.name] ?? e.name
                guard let d = byName[name] else {
                    throw RulesError("'\(e.name)': \(rules.name) has no 'define \(e.name)' (the names are those of "
                                     + "'reflectguard nft generate')", at: e.location)
                }
                guard configured[name] == nil else {
                    throw RulesError("'\(e.name)' is defined twice", at: e.location)
                }
                var value = e.value
                if name == "queues", let q = QueueRange(value) { value = q.description }
                // As with -D: a bare element where the ruleset has a set is a one-element set.
                if d.value.hasPrefix("{"), !value.hasPrefix("{") { value = "{ \(value) }" }
                overrides[name] = value
                configured[name] = ConfigOrigin(location: e.location, lineCount: e.lineCount, written: e.value)
            }
        }
        for item in defines {
            // Scalars, not Characters: Swift reads "\r\n" as one Character, which is neither "\r"
            // nor "\n", so a CRLF slipped past a Character check into nft's text as a line break.
            if let c = item.unicodeScalars.first(where: isControl) {
                throw RulesError("-D \(item.debugDescription): control character U+\(hex4(c)) in it; "
                                 + "give NAME=VALUE on one line", at: nil, fromCommandLine: true)
            }
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw RulesError("-D '\(item)': expected NAME=VALUE", at: nil, fromCommandLine: true)
            }
            var name = String(item[..<eq])
            var value = String(item[item.index(after: eq)...]).trimmingBlanks()
            name = aliases[name] ?? name
            guard byName[name] != nil else {
                throw RulesError("-D \(name): \(rules.name) has no 'define \(name)'", at: nil, fromCommandLine: true)
            }
            guard !value.isEmpty, !value.contains("#"), !value.contains(";") else {
                throw RulesError("-D \(name): the value must be one non-empty line without '#' or ';'",
                                 at: nil, fromCommandLine: true)
            }
            if name == "queues", let q = QueueRange(value) { value = q.description }
            // A set stays a set: `-D protected_v4=198.18.2.0/24` means `{ 198.18.2.0/24 }`
            // (`elements = 198.18.2.0/24` would not load).
            if byName[name]!.value.hasPrefix("{"), !value.hasPrefix("{") { value = "{ \(value) }" }
            overrides[name] = value
            configured[name] = nil
        }
        if !protect.isEmpty {
            var add4: [String] = [], add6: [String] = []
            for p in protect {
                let c: CIDR
                do { c = try CIDR(parsing: p) } catch {
                    throw RulesError("--protect: \(error) (an IPv4 or IPv6 address or prefix)", at: nil,
                                     fromCommandLine: true)
                }
                if c.isIPv4 && !p.contains(":") { add4.append(p) } else { add6.append(p) }
            }
            for (name, added) in [("protected_v4", add4), ("protected_v6", add6)] where !added.isEmpty {
                guard let d = byName[name] else {
                    throw RulesError("--protect: \(rules.name) has no 'define \(name)' to add to", at: nil,
                                     fromCommandLine: true)
                }
                // A malformed set is left for PolicyBuilder to refuse where it stands: merged
                // here, its stray parts would be smoothed into a valid set.
                guard let base = try? NftValue.setElements(overrides[name] ?? d.value).map(\.text) else { continue }
                overrides[name] = "{ " + (base + added).joined(separator: ", ") + " }"
            }
        }
        var values: [String: String] = [:]
        for d in scanner.defines { values[d.name] = overrides[d.name] ?? d.value }
        let commandLine = Set(overrides.keys).subtracting(configured.keys)
        let resolved = try resolveReferences(values, scanner, rules.name, overridden: commandLine,
                                             configured: configured)
        var builder = PolicyBuilder(file: rules.name, defines: byName, overridden: commandLine,
                                    configured: configured, values: resolved)
        let policy = try builder.build()
        let substituted = substitute(rules.text, scanner, overrides)
        try checkRenderedSize(substituted, scanner, resolved, rules.name)
        try checkExpanded(substituted, scanner, resolved, rules.name)
        return ResolvedRules(file: rules, config: config, policy: policy, queues: builder.queues, queueMark: builder.queueMark,
                             armedTimeout: builder.armedTimeout,
                             text: String(decoding: substituted, as: UTF8.self), values: resolved,
                             scanner: scanner, substituted: substituted, overrides: overrides)
    }

    /// The text for nft: scalar defines expanded in every line outside the defines, the lines of
    /// `blank` left empty.
    static func render(_ bytes: [UInt8], _ scan: RulesScanner, _ values: [String: String],
                       blank: Set<Int>) -> RenderedRules {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var expansions: [Int: [RenderedRules.Expansion]] = [:]
        let lines = RulesScanner.splitLines(bytes)
        for (idx, (start, end)) in lines.enumerated() {
            let lineNo = idx + 1
            if !blank.contains(lineNo) {
                if scan.defineLines.contains(lineNo) {
                    out.append(contentsOf: bytes[start..<end])
                } else {
                    var found: [RenderedRules.Expansion] = []
                    expand(bytes[start..<end], values, scalarsOnly: true, into: &out, expansions: &found)
                    if !found.isEmpty { expansions[lineNo] = found }
                }
            }
            if end < bytes.count { out.append(0x0a) }
        }
        return RenderedRules(text: String(decoding: out, as: UTF8.self), expansions: expansions)
    }

    /// The statement checks again on what nft gets: a scalar value is pasted into the rules as
    /// text, so `define x = } ; flush ruleset` (or a `-D` value like it) used as `$x` inside the
    /// table would close it and flush everything, though the file as written passed.
    static func checkExpanded(_ bytes: [UInt8], _ scanner: RulesScanner, _ values: [String: String],
                              _ file: String) throws(RulesError) {
        let whole = render(bytes, scanner, values, blank: [])
        do { _ = try RulesScanner(bytes: Array(whole.text.utf8), file: file) } catch {
            var e = error
            if let l = e.location { e.location?.column = whole.originalColumn(line: l.line, column: l.column) }
            // The text as written passed these checks: the expansion is what broke it.
            e.message = "with its defines expanded: " + e.message
            throw e
        }
    }

    /// How much expanding `$name` references may add: to the defines' values in all, and again
    /// to the text for nft. A real ruleset adds a few hundred bytes; chained defines that each
    /// repeat the one before (`define b = { $a, $a, … }`, the "billion laughs") double per link
    /// and reached gigabytes before this bound.
    public static let expansionLimit = 1 << 20
    /// How deep defines may refer to defines.
    public static let referenceDepthLimit = 16

    /// Values with `$name` references to other defines resolved, as nft does: in file order, each
    /// to a define above it (nft 1.0.6 says "unknown identifier" for one below or none).
    static func resolveReferences(_ values: [String: String], _ scanner: RulesScanner, _ file: String,
                                  overridden: Set<String>,
                                  configured: [String: ConfigOrigin] = [:]) throws(RulesError) -> [String: String] {
        var out: [String: String] = [:]
        var depth: [String: Int] = [:]
        var added = 0
        let defined = Set(scanner.defines.map(\.name))
        for d in scanner.defines {
            let raw = values[d.name]!
            let bytes = Array(raw.utf8)
            var problem: String?
            var deepest = -1
            var growth = 0
            references(in: bytes[...]) { range, name in
                guard problem == nil else { return }
                guard let v = out[name] else {
                    problem = name == d.name ? "'$\(name)' refers to itself"
                        : defined.contains(name) ? "'$\(name)' is defined below '\(d.name)' (nft reads defines in order)"
                        : "'$\(name)': no such define"
                    return
                }
                deepest = max(deepest, depth[name]!)
                growth += v.utf8.count - range.count   // each value ≤ expansionLimit: no overflow
                if growth > expansionLimit { problem = "expanding its references adds more than \(expansionLimit) bytes" }
            }
            func fail(_ message: String) -> RulesError {
                if let origin = configured[d.name] { return RulesError("'\(d.name)': \(message)", at: origin.location) }
                // From -D too a rules error at the define it replaces (see PolicyBuilder.error).
                return RulesError(overridden.contains(d.name) ? "-D \(d.name): \(message)" : "'\(d.name)': \(message)",
                           at: SourceLocation(file: file, line: d.line, column: d.column))
            }
            if let problem { throw fail(problem) }
            depth[d.name] = deepest + 1
            guard deepest < referenceDepthLimit else {
                throw fail("defines refer to defines more than \(referenceDepthLimit) deep")
            }
            added += max(0, growth)
            guard added <= expansionLimit else {
                throw fail("expanding the defines' references adds more than \(expansionLimit) bytes in all")
            }
            if deepest < 0 { out[d.name] = raw; continue }
            var expanded: [UInt8] = []
            expanded.reserveCapacity(bytes.count + max(0, growth))
            var ignored: [RenderedRules.Expansion] = []
            expand(bytes[...], out, scalarsOnly: false, into: &expanded, expansions: &ignored)
            out[d.name] = String(decoding: expanded, as: UTF8.self)
        }
        return out
    }

    /// The text for nft expands scalar defines in every rule line: bounded like the defines
    /// (`expansionLimit`), checked before anything is built.
    static func checkRenderedSize(_ bytes: [UInt8], _ scanner: RulesScanner, _ values: [String: String],
                                  _ file: String) throws(RulesError) {
        var added = 0
        var over: SourceLocation?
        for (idx, (start, end)) in RulesScanner.splitLines(bytes).enumerated()
        where !scanner.defineLines.contains(idx + 1) && over == nil {
            references(in: bytes[start..<end]) { range, name in
                guard over == nil, let v = values[name], !v.contains("{") else { return }
                added += v.utf8.count - range.count
                if added > expansionLimit { over = SourceLocation(file: file, line: idx + 1, column: range.lowerBound - start + 1) }
            }
        }
        if let over {
            throw RulesError("expanding the defines in the rules adds more than \(expansionLimit) bytes", at: over)
        }
    }

    /// The file with each overridden define's value replaced in place; a value that spanned
    /// several lines leaves its newlines behind, so every later line keeps its number.
    static func substitute(_ text: String, _ scanner: RulesScanner, _ overrides: [String: String]) -> [UInt8] {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var pos = 0
        for d in scanner.defines {
            guard let v = overrides[d.name] else { continue }
            out.append(contentsOf: bytes[pos..<d.range.lowerBound])
            out.append(contentsOf: Array(v.utf8))
            for _ in 1..<d.lineCount { out.append(0x0a) }
            pos = d.range.upperBound
        }
        out.append(contentsOf: bytes[pos...])
        return out
    }

    /// Copies a line, replacing `$name` of scalar defines (values without `{`) with the value.
    /// Set-valued defines stay nft variables: nft accepts those, even empty (`elements = $x`
    /// with `x = { }` loads, a literal `elements = { }` does not).
    static func expand(_ line: ArraySlice<UInt8>, _ values: [String: String], scalarsOnly: Bool,
                       into out: inout [UInt8], expansions: inout [RenderedRules.Expansion]) {
        let outLineStart = out.count
        var pos = line.startIndex
        references(in: line) { range, name in
            guard let v = values[name], !(scalarsOnly && v.contains("{")) else { return }
            out.append(contentsOf: line[pos..<range.lowerBound])
            expansions.append(RenderedRules.Expansion(
                column: out.count - outLineStart + 1, length: v.utf8.count,
                originalColumn: range.lowerBound - line.startIndex + 1, originalLength: range.count))
            out.append(contentsOf: v.utf8)
            pos = range.upperBound
        }
        out.append(contentsOf: line[pos...])
    }

    /// Each `$name` of a line outside quotes and comments: its byte range (with the `$`) and name.
    static func references(in line: ArraySlice<UInt8>, _ visit: (Range<Int>, String) -> Void) {
        var i = line.startIndex
        var quoted = false
        while i < line.endIndex {
            let b = line[i]
            if b == 0x22 { quoted.toggle() }
            if b == 0x23, !quoted { return }
            if b == 0x24, !quoted {
                var j = i + 1
                while j < line.endIndex, RulesScanner.isIdentByte(line[j]) { j += 1 }
                if j > i + 1 { visit(i..<j, String(decoding: line[(i + 1)..<j], as: UTF8.self)) }
                i = j
                continue
            }
            i += 1
        }
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.properties.generalCategory == .control || s.properties.generalCategory == .lineSeparator
            || s.properties.generalCategory == .paragraphSeparator
    }

    static func hex4(_ s: Unicode.Scalar) -> String {
        let h = String(s.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }

    /// The elements of a set literal `{ a, b }` (or a single value), with byte offsets into `value`.
    static func elements(of value: String) -> [(text: String, offset: Int)] {
        let bytes = Array(value.utf8)
        var out: [(String, Int)] = []
        var i = 0
        var start = -1
        func flush(_ end: Int) {
            guard start >= 0 else { return }
            let s = String(decoding: bytes[start..<end], as: UTF8.self).trimmingBlanks()
            let lead = bytes[start..<end].prefix(while: { $0 == 0x20 || $0 == 0x09 }).count
            if !s.isEmpty { out.append((s, start + lead)) }
            start = -1
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x7b || b == 0x7d || b == 0x2c {
                flush(i)
            } else if start < 0, b != 0x20, b != 0x09 {
                start = i
            }
            i += 1
        }
        flush(bytes.count)
        return out
    }
}
