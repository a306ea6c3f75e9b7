import Rules
#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// Checks, applies and removes ReflectGuard's ruleset in-process through libnftables.
///
/// Apply is one nft transaction: ReflectGuard's existing chains are flushed and deleted and the
/// new ones declared in the same batch, so a failure changes nothing, and the sets are only
/// declared (never flushed, except the file's configured protected/allowlist sets, which are
/// refilled in the same batch), so pending SYNs and armed victims survive a reload. With the xtables
/// backend the NFQUEUE rules cannot join that transaction; they are added first (harmless while
/// nothing is marked) and taken out again if the nft transaction fails.
public enum NftRuleset {
    public static let family = "inet"
    public static let table = "reflectguard"

    /// Warning for operators: what `nft list ruleset` prints for the xtables rule does not load back.
    public static let listingWarning = """
        note: with the xtables backend, `nft list ruleset` prints ReflectGuard's NFQUEUE rules as \
        `queue num N bypass`, which this kernel cannot load back (it has no nft queue expression); \
        save rulesets with `reflectguard nft generate` plus `iptables-nft-save`, not `nft list ruleset`.
        """

    /// Whether the kernel has the nft `queue` expression: a dry-run batch with a queue rule in a
    /// throwaway table. The kernel checks the batch, nothing is ever committed.
    public static func probeBackend() throws(NftError) -> Backend {
        let ctx = try NftContext()
        let probe = """
            add table inet reflectguard_probe
            add chain inet reflectguard_probe probe { type filter hook forward priority 0; policy accept; }
            add rule inet reflectguard_probe probe queue num 0 bypass

            """
        let r = ctx.run(probe, dryRun: true)
        if r.ok { return .nft }
        if r.errors.contains("Operation not permitted") { throw permissionError }
        return .xt
    }

    /// What `apply` loads, for `nft generate`: the nft text, then (xtables backend) the
    /// iptables-nft rules as comments.
    public static func generate(_ rules: ResolvedRules, hook: Hook, backend: Backend) -> String {
        var text = rules.render(hook: hook, backend: backend)
        if backend == .xt {
            if !text.hasSuffix("\n") { text += "\n" }
            text += "\n# xtables backend: `reflectguard nft apply` also adds these rules (they queue the packets\n"
            text += "# the chains above mark; the comment tags them for `nft remove`):\n"
            for r in rules.xtablesRules(hook: hook) { text += "#   \(r.commandLine)\n" }
            text += "# " + listingWarning.replacingNewlines() + "\n"
        }
        return text
    }

    /// Checks the ruleset against the running kernel without changing anything.
    public static func check(_ rules: ResolvedRules, hook: Hook, backend: Backend) throws(NftError) {
        let ctx = try NftContext()
        try load(rules, hook: hook, backend: backend, owner: .unrecorded, ctx: ctx, dryRun: true)
    }

    /// Checks, then applies atomically (see the type's comment for the order of the steps), with
    /// `owner` recorded in the table in the same transaction. Returns true when the table was
    /// dormant and the apply woke it.
    ///
    /// A dormant table (`nft add table inet reflectguard '{ flags dormant; }'`) hooks none of its
    /// chains, and the kernel refuses (EINVAL, "Could not process rule") a batch that replaces
    /// its base chains: it is woken in a transaction of its own first, and put back to sleep when
    /// the apply fails, so a refused apply leaves the kernel as it found it.
    @discardableResult
    public static func apply(_ rules: ResolvedRules, hook: Hook, backend: Backend, owner: TableOwner) throws(NftError) -> Bool {
        let flags = try NftGeneration().tableFlags(table)
        let dormant = flags.map { $0 & NftGeneration.tableDormant != 0 } ?? false
        if dormant { try setDormant(false) }
        do {
            try applyAwake(rules, hook: hook, backend: backend, owner: owner)
        } catch {
            if dormant { try? setDormant(true) }
            throw error
        }
        return dormant
    }

    private static func applyAwake(_ rules: ResolvedRules, hook: Hook, backend: Backend, owner: TableOwner) throws(NftError) {
        let ctx = try NftContext()
        try load(rules, hook: hook, backend: backend, owner: owner, ctx: ctx, dryRun: true)
        if backend == .xt, !Xtables.available {
            throw NftError("the xtables backend needs iptables-nft and ip6tables-nft", rulesError: false)
        }
        let (before, shadowed) = Xtables.available ? try Xtables.scan() : ([], [])
        let wanted = backend == .xt ? rules.xtablesRules(hook: hook) : []
        var added: [XtablesRule] = []
        do {
            for r in wanted where !before.contains(r) {
                try Xtables.insert(r)
                added.append(r)
            }
            try load(rules, hook: hook, backend: backend, owner: owner, ctx: ctx, dryRun: false)
        } catch {
            // Best effort: the rules we just added only match packets nft marks, and nft's
            // transaction did not commit, so removing them restores the state before apply.
            try? Xtables.delete(added, ctx: ctx)
            throw error
        }
        // Rules of an earlier apply (another queue range or hook, or the nft backend now).
        try Xtables.delete(before.filter { !wanted.contains($0) }, ctx: ctx)
        // Ours go in front of the chain, as `insert` puts them: a rule placed before one since
        // would hide packets from the agent.
        for s in shadowed where wanted.contains(s.rule) { try Xtables.moveToTop(s.rule, from: s.number) }
    }

    /// The owner record of ReflectGuard's table; nil when there is no table.
    public static func owner() throws(NftError) -> TableOwner? {
        let ctx = try NftContext()
        let listing = ctx.run("list table \(family) \(table)")
        guard listing.ok else {
            if listing.errors.contains("Operation not permitted") { throw permissionError }
            return nil
        }
        return TableOwner(listing: listing.output)
    }

    /// Replaces the owner record alone (the rules stay as they are): an agent leaving in place a
    /// table that `nft apply` made gives it back its record.
    public static func record(_ owner: TableOwner) throws(NftError) {
        let ctx = try NftContext()
        let listing = ctx.run("list table \(family) \(table)")
        guard listing.ok else { throw NftError("recording the owner: \(listing.errors.trimmedLine)", rulesError: false) }
        var commands = owner.declaration
        if listing.output.contains("chain \(TableOwner.chain) {") {
            commands = "delete chain \(family) \(table) \(TableOwner.chain)\n" + commands
        }
        guard !commands.isEmpty else { return }
        let r = ctx.run(commands)
        guard r.ok else { throw NftError("recording the owner: \(r.errors.trimmedLine)", rulesError: false) }
    }

    /// Deletes ReflectGuard's table and its tagged xtables rules (and the `mangle` tables those
    /// leave empty); nothing else.
    public static func remove() throws(NftError) {
        let ctx = try NftContext()
        let listing = ctx.run("list table \(family) \(table)")
        if listing.errors.contains("Operation not permitted") { throw permissionError }
        if listing.ok {
            let r = ctx.run("delete table \(family) \(table)")
            guard r.ok else { throw NftError(r.errors.trimmedLine, rulesError: false) }
        }
        if Xtables.available {
            try Xtables.delete(try Xtables.tagged(), ctx: ctx)
        }
    }

    /// The sets from which the kernel learns the flows the protected side sends on
    /// (nft/reflectguard.nft, `learn_interval`).
    public static let learnSets = ["learn4", "learn6"]

    /// Empties the learn sets the table has (a rules file of the operator's may have none), so
    /// a new agent's engines, which know no flow yet, get one packet of every flow still in use
    /// from the start instead of after up to `learn_interval`. Returns the sets emptied.
    @discardableResult
    public static func forgetLearntFlows() throws(NftError) -> [String] {
        let ctx = try NftContext()
        let listing = ctx.run("list sets \(family)")
        guard listing.ok else { throw NftError("listing the sets: \(listing.errors.trimmedLine)", rulesError: false) }
        var inTable = false
        var present: [String] = []
        for line in listing.output.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.count >= 3, words[0] == "table" { inTable = words[2] == Substring(table) }
            if inTable, words.count >= 2, words[0] == "set", learnSets.contains(String(words[1])) { present.append(String(words[1])) }
        }
        guard !present.isEmpty else { return [] }
        let r = ctx.run(present.map { "flush set \(family) \(table) \($0)\n" }.joined())
        guard r.ok else { throw NftError("emptying \(present.joined(separator: ", ")): \(r.errors.trimmedLine)", rulesError: false) }
        return present
    }

    /// Sets or clears the table's dormant flag, as a transaction of its own: nft sends the
    /// table's flags with every `add table`, 0 when none is given, and the kernel then hooks the
    /// chains of a dormant table again (checked with nftables 1.0.6 on Linux 6.18).
    static func setDormant(_ dormant: Bool) throws(NftError) {
        let ctx = try NftContext()
        let r = ctx.run("add table \(family) \(table)" + (dormant ? " { flags dormant; }" : ""))
        guard r.ok else {
            if r.errors.contains("Operation not permitted") { throw permissionError }
            throw NftError((dormant ? "putting the table back to sleep: " : "waking the dormant table: ") + r.errors.trimmedLine,
                           rulesError: false)
        }
    }

    static let permissionError = NftError("cannot talk to nftables: Operation not permitted (needs CAP_NET_ADMIN)",
                                          rulesError: false)

    /// `flush chain` + `delete chain` for each chain the table has now: the new text declares its
    /// chains again in the same transaction, and sets are left alone.
    /// The file's configured sets (protected, allowlist) are flushed too, and refilled by the
    /// same batch.
    static func replacePrelude(_ ctx: NftContext, configuredSets: [String]) -> String {
        let listing = ctx.run("list table \(family) \(table)")
        guard listing.ok else { return "" }
        var chains: [String] = []
        var prelude = ""
        for line in listing.output.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2 else { continue }
            if words[0] == "chain" { chains.append(String(words[1])) }
            if words[0] == "set", configuredSets.contains(String(words[1])) {
                prelude += "flush set \(family) \(table) \(words[1]); "
            }
        }
        for c in chains { prelude += "flush chain \(family) \(table) \(c); " }
        for c in chains { prelude += "delete chain \(family) \(table) \(c); " }
        return prelude
    }

    /// Loads the rendered text from a temporary file, so nft's errors carry FILE:LINE:COL; the
    /// file is named back to the operator's. The prelude goes on line 1, replacing it when it is
    /// a comment or blank, so every line keeps its number.
    static func load(_ rules: ResolvedRules, hook: Hook, backend: Backend, owner: TableOwner, ctx: NftContext,
                     dryRun: Bool) throws(NftError) {
        let rendered = rules.renderMapped(hook: hook, backend: backend)
        var text = rendered.text
        // After the operator's last line, so no line of theirs moves.
        if !text.hasSuffix("\n") { text += "\n" }
        text += owner.declaration
        let prelude = replacePrelude(ctx, configuredSets: rules.configuredSets)
        var shift = 0
        if !prelude.isEmpty {
            let firstEnd = text.firstIndex(of: "\n") ?? text.endIndex
            let first = text[..<firstEnd].trimmingCharacters()
            if first.isEmpty || first.hasPrefix("#") {
                text = prelude + text[firstEnd...]
            } else {
                text = prelude + text
                shift = prelude.utf8.count
            }
        }
        let path = try writeTemporary(text)
        defer { unlink(path) }
        let r = ctx.runFile(path, dryRun: dryRun)
        guard r.ok else {
            var message = r.errors.replacingAll(path, with: rules.file.name)
            message = mapColumns(message, file: rules.file.name) { line, column in
                rendered.originalColumn(line: line, column: line == 1 ? max(1, column - shift) : column)
            }
            let permission = message.contains("Operation not permitted")
            if permission {
                message = "cannot load rules: Operation not permitted (needs CAP_NET_ADMIN)\n" + message
            }
            throw NftError(message, rulesError: !permission)
        }
    }

    static func writeTemporary(_ text: String) throws(NftError) -> String {
        var template = Array("/tmp/reflectguard-rules-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { t in
            Result { () throws(SystemCallError) in try syscallValue("mkstemp") { mkstemp(t.baseAddress!) } }
        }
        let fd: Int32
        do throws(SystemCallError) { fd = try made.get() } catch {
            throw NftError("mkstemp: \(error.reason)", rulesError: false)
        }
        let path = String(nulTerminated: template)
        do throws(SystemCallError) {
            try writeAll(fd, Array(text.utf8), name: "write(\(path))")
        } catch {
            close(fd)
            unlink(path)
            throw NftError("writing \(path): \(error.reason)", rulesError: false)
        }
        close(fd)
        return path
    }

    /// Rewrites `FILE:LINE:C-D:` positions at the start of nft's error lines with `map`: the
    /// prelude put before line 1 and expanded defines move columns, never lines.
    static func mapColumns(_ message: String, file: String, _ map: (Int, Int) -> Int) -> String {
        let prefix = file + ":"
        return message.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard line.hasPrefix(prefix) else { return String(line) }
            let rest = line.dropFirst(prefix.count)
            let parts = rest.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let lineNo = Int(parts[0]) else { return String(line) }
            let cols = parts[1].split(separator: "-").compactMap { Int($0) }
            guard !cols.isEmpty else { return String(line) }
            let mapped = cols.map { String(map(lineNo, $0)) }.joined(separator: "-")
            return prefix + "\(lineNo):" + mapped + ":" + parts[2]
        }.joined(separator: "\n")
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    func replacingNewlines() -> String { split(separator: "\n").joined(separator: " ") }
}

extension Substring {
    func range(of target: String) -> Range<Substring.Index>? {
        let t = Array(target.utf8)
        let u = self.utf8
        var i = u.startIndex
        while i != u.endIndex {
            var j = i
            var k = 0
            while k < t.count, j != u.endIndex, u[j] == t[k] { j = u.index(after: j); k += 1 }
            if k == t.count { return i..<j }
            i = u.index(after: i)
        }
        return nil
    }
}
