#if canImport(Glibc)
import Glibc
#endif
import PacketParser
import Rules
import VerdictEngine

/// What must hold for any rules text, compiled into the rules fuzz target (Fuzz/RulesFuzz.swift)
/// and into the regression test that replays Fuzz/corpus-rules.
///
/// Input: the bytes are the rules file `fuzz.nft`. Lines that start `#!D ` or `#!P ` (comments to
/// nft) also give the rest of the line as a `-D` or `--protect` argument.
///
/// Checks: resolving never traps and ends in bounded work; an error of the file names a
/// position inside it, one of the command line names none; an accepted ruleset renders line for
/// line within the expansion bound for every hook and backend, holds every table value in its
/// range, prints its prefixes so they parse back, with IPv4 text glibc's strict inet_pton reads
/// the same, and the text nft would get resolves again to the same policy (what the kernel loads
/// and what the agent enforces cannot drift).
public enum RulesFuzzInvariants {
    public static func check(_ input: UnsafeRawBufferPointer) -> [String] {
        let text = String(decoding: input, as: UTF8.self)
        var defines: [String] = []
        var protect: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#!D ") { defines.append(String(line.dropFirst(4))) }
            if line.hasPrefix("#!P ") { protect.append(String(line.dropFirst(4))) }
        }
        var failures: [String] = []
        let lineCount = text.utf8.reduce(1) { $0 + ($1 == 0x0a ? 1 : 0) }
        let resolved: ResolvedRules
        do {
            resolved = try RulesConfig.resolve(rules: RulesFile(name: "fuzz.nft", text: text), protect: protect,
                                               defines: defines)
        } catch {
            checkError(error, lineCount: lineCount, into: &failures)
            return failures
        }
        checkAccepted(resolved, into: &failures)
        return failures
    }

    static func checkError(_ error: RulesError, lineCount: Int, into failures: inout [String]) {
        if error.fromCommandLine {
            if error.location != nil { failures.append("command-line error with a location: \(error)") }
            return
        }
        guard let at = error.location else {
            failures.append("file error without a location: \(error)")
            return
        }
        if at.file != "fuzz.nft" || at.line < 1 || at.line > lineCount || at.column < 1 {
            failures.append("error outside the file (\(lineCount) lines): \(error)")
        }
        if !error.description.hasPrefix("fuzz.nft:\(at.line):\(at.column): error: ") {
            failures.append("error not FILE:LINE:COL: \(error.description.prefix(120))")
        }
    }

    static func checkAccepted(_ r: ResolvedRules, into failures: inout [String]) {
        let p = r.policy
        let newlines = r.text.utf8.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
        for hook in Hook.allCases {
            for backend in Backend.allCases {
                let out = r.render(hook: hook, backend: backend)
                let n = out.utf8.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
                if n != newlines { failures.append("\(hook)/\(backend): \(n) lines rendered for \(newlines)") }
                // The kernel-only variant may lengthen kernel_enforce's value by one word.
                if out.utf8.count > r.text.utf8.count + RulesConfig.expansionLimit + 16 {
                    failures.append("\(hook)/\(backend): rendered \(out.utf8.count) bytes from \(r.text.utf8.count)")
                }
            }
        }
        func within(_ name: String, _ v: Double, _ range: ClosedRange<Double>) {
            if r.values[name] != nil, !range.contains(v) { failures.append("\(name) = \(v) outside \(range)") }
        }
        for (name, v) in [("rst_rate", p.rstRate), ("rst_burst", p.rstBurst), ("rst_prefix_rate", p.rstPrefixRate),
                          ("rst_prefix_burst", p.rstPrefixBurst), ("rst_network_rate", p.rstNetworkRate),
                          ("rst_network_burst", p.rstNetworkBurst), ("backscatter_rate", p.backscatterRate),
                          ("backscatter_burst", p.backscatterBurst), ("attack_rate", p.attackRate)] {
            within(name, v, 1...1_000_000_000)
        }
        within("syn_table_size", Double(p.synTableCapacity), 1...16_777_216)
        within("syn_horizon", p.synHorizon, 0.01...86_400)
        within("synack_horizon", p.synackHorizon, 0.01...86_400)
        within("armed_timeout", r.armedTimeout, 0.01...86_400)
        within("score_threshold", Double(p.scoreThreshold), 0...100)
        if r.queues.first > r.queues.last || p.queueCount != r.queues.count { failures.append("queues \(r.queues)") }
        if r.queueMark == 0 { failures.append("queue mark 0") }
        for c in p.protected.prefixes + p.allowlist.prefixes {
            let text = c.description
            if CIDR(text) != c { failures.append("prefix \(text) does not parse back") }
            if c.isIPv4 {
                var b = [UInt8](repeating: 0, count: 4)
                let address = String(text.prefix(while: { $0 != "/" }))
                if inet_pton(AF_INET, address, &b) != 1 || b != [12, 13, 14, 15].map({ c.address.bytes[$0] }) {
                    failures.append("inet_pton reads \(address) otherwise")
                }
            }
        }
        // What nft gets is itself a ruleset: resolving it again (no overrides: they are in the
        // text) gives the same policy.
        let rendered = r.render(hook: .router, backend: .xt)
        do {
            let again = try RulesConfig.resolve(rules: RulesFile(name: "fuzz.nft", text: rendered))
            if again.policy != p || again.queues != r.queues || again.queueMark != r.queueMark
                || again.armedTimeout != r.armedTimeout {
                failures.append("the rendered text resolves to another policy")
            }
        } catch {
            failures.append("the rendered text is refused: \(error)")
        }
    }
}
