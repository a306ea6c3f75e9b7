import Rules

/// ReflectGuard's table as one `reflectguard run` holds it: every apply records this agent as
/// the owner, and at exit the table goes only when this agent made it or took it over from an
/// agent that died (which would have removed it). A table that `nft apply` made, or one with no
/// record, was there for somebody else's reasons: it stays, with its record given back.
///
/// Called from the agent's main thread only (start, SIGHUP reloads, exit).
public final class AgentRuleset: @unchecked Sendable {
    public let owner: TableOwner
    /// What the first apply found in the kernel: `.some(nil)` for no table; nil before it.
    private var found: TableOwner??

    public init() { owner = .thisAgent() }

    /// Applies `rules` with this agent as the owner. The first call returns a sentence about the
    /// table it adopted, when there was one.
    public func apply(_ rules: ResolvedRules, hook: Hook, backend: Backend) throws(NftError) -> String? {
        var note: String? = nil
        if found == nil {
            let current = try NftRuleset.owner()
            found = .some(current)
            switch current {
            case nil: break
            case .agent(let pid, let since)?:
                note = "adopted the table of agent pid \(pid) (since \(since)), which no longer runs; removed at exit"
            case .nftApply(let since)?:
                note = "adopted the table 'reflectguard nft apply' made (since \(since)); left in place at exit"
            case .unrecorded?:
                note = "adopted a table with no owner record; left in place at exit"
            }
        }
        try NftRuleset.apply(rules, hook: hook, backend: backend, owner: owner)
        return note
    }

    /// At exit: removes what this agent owns (unless `keep`, --keep-rules), and returns nil when
    /// it removed the rules, else why they stay.
    public func release(keep: Bool) throws(NftError) -> String? {
        guard let found else { return "never applied" }
        let current = try NftRuleset.owner()
        if let current, current != owner {
            // `nft apply --force` replaced our rules while we ran: they are its rules now.
            return "the table is now recorded as '\(current)'"
        }
        switch found {
        case .nftApply?, .unrecorded?:
            if current != nil { try NftRuleset.record(found!) }
            return "the table was there before this agent ('\(found!)'): left for 'reflectguard nft remove'"
        case nil, .agent?:
            if keep { return "--keep-rules" }
            // Also when the table went already (`nft delete table`): our xtables rules may not have.
            try NftRuleset.remove()
            return nil
        }
    }
}
