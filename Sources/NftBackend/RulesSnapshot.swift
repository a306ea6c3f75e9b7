/// What tells the agent that its rules are still in the kernel: `nft flush ruleset` (Debian's
/// nftables.service starts with it), `nft delete table` or `iptables-nft -F` take them away
/// without telling anyone.
///
/// Cheap first: while the ruleset's generation id (`NftGeneration`) has not moved since the last
/// check that found everything, nothing changed. When it moved (a flush, somebody's `nft -f`, our
/// own arming), the table's chains are compared with what the last apply left, through `list
/// chains`, the one libnftables listing that does not fetch set elements; and with the xtables
/// backend the chains our NFQUEUE rules live in are read with `iptables-nft -S` (nft cannot list
/// those rules' `reflectguard` comment). Rules deleted one by one inside our own chains go
/// unnoticed: nothing but `nft delete rule` by hand does that.
struct RulesSnapshot: Equatable {
    /// `list chains inet`, the block of ReflectGuard's table; nil when there is none.
    var chains: String?

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
