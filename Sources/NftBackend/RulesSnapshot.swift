/// What tells the agent that its rules are still in the kernel: `nft flush ruleset` (Debian's
/// nftables.service starts with it), `nft delete table` or `iptables-nft -F` take them away
/// without telling anyone.
///
/// Cheap first: while the ruleset's generation id (`NftGeneration`) has not moved since the last
/// check that found everything, nothing changed. When it moved (a flush, somebody's `nft -f`, our
/// own arming), the table's chains are compared with what the last apply left, through `list
/// chains`, the one libnftables listing that does not fetch set elements; and with the xtables
/// backend the chains our NFQUEUE rules live in are read with `iptables-nft -S` (nft cannot list
/// those rules' `reflectguard` comment). Edits inside the table (`nft flush chain`, `nft insert
/// rule ... accept`, `nft flush set ... protected4`) are told by a fingerprint of its rules and
/// of the configured sets' elements, read over raw netlink (`NftGeneration.contents`).
struct RulesSnapshot: Equatable {
    /// `list chains inet`, the block of ReflectGuard's table; nil when there is none.
    var chains: String?
    /// `NftGeneration.contents` of the table and its configured sets; nil when not taken.
    var contents: Int?

    static func take(_ ctx: NftContext, _ generation: NftGeneration, sets: [String]) throws(NftError) -> RulesSnapshot {
        var s = try take(ctx)
        s.contents = try generation.contents(NftRuleset.table, sets: sets)
        return s
    }

    static func take(_ ctx: NftContext) throws(NftError) -> RulesSnapshot {
        let r = ctx.run("list chains \(NftRuleset.family)")
        guard r.ok else {
            if r.errors.contains("Operation not permitted") { throw NftRuleset.permissionError }
            throw NftError("list chains: \(r.errors.trimmedLine)", rulesError: false)
        }
        var block: String? = nil
        for line in r.output.split(separator: "\n", omittingEmptySubsequences: false) {
            if block == nil {
                guard line == "table \(NftRuleset.family) \(NftRuleset.table) {" else { continue }
                block = ""
            }
            block! += line + "\n"
            // The table's own closing brace: the chains' are indented.
            if line == "}" { break }
        }
        return RulesSnapshot(chains: block)
    }
}
