import Rules
import Synchronization

/// ReflectGuard's table as one `reflectguard run` holds it: every apply records this agent as
/// the owner, and at exit the table goes only when this agent made it or took it over from an
/// agent that died (which would have removed it). A table that `nft apply` made, or one with no
/// record, was there for somebody else's reasons: it stays, with its record given back.
///
/// Called from the agent's main thread (start, SIGHUP reloads, exit) and its rules watchdog;
/// one call at a time (everything it knows is behind one lock), so a check never sees half of a
/// reload.
public final class AgentRuleset: Sendable {
    public let owner: TableOwner
    private struct State {
        /// What the first apply found in the kernel: `.some(nil)` for no table; nil before it.
        var found: TableOwner??
        /// The last successful apply (the watchdog re-applies exactly this) and what it left.
        var last: (rules: ResolvedRules, hook: Hook, backend: Backend)?
        var snapshot: RulesSnapshot?
        /// The generation id at the last check that found everything in place.
        var verified: UInt32?
        var generation: NftGeneration?
    }
    private let state = Mutex(State())

    public init() { owner = .thisAgent() }

    /// Applies `rules` with this agent as the owner. The first call returns a sentence about the
    /// table it adopted, when there was one.
    public func apply(_ rules: ResolvedRules, hook: Hook, backend: Backend) throws(NftError) -> String? {
        try state.withLock { s throws(NftError) in try applyAlone(&s, rules, hook: hook, backend: backend) }
    }

    private func applyAlone(_ s: inout State, _ rules: ResolvedRules, hook: Hook, backend: Backend) throws(NftError) -> String? {
        var note: String? = nil
        if s.found == nil {
            let current = try NftRuleset.owner()
            s.found = .some(current)
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
        if try NftRuleset.apply(rules, hook: hook, backend: backend, owner: owner) {
            let woke = "woke the table, which was dormant (its chains hooked nothing)"
            note = note.map { $0 + "; " + woke } ?? woke
        }
        if s.last == nil {
            // This agent's engines know no flow yet: what the kernel learnt for an earlier one
            // would keep those flows from the queue for up to `learn_interval`.
            do throws(NftError) { try NftRuleset.forgetLearntFlows() } catch {
                let forgot = "could not empty the learn sets (flows older than the agent are learnt within learn_interval): \(error.message)"
                note = note.map { $0 + "; " + forgot } ?? forgot
            }
        }
        s.last = (rules, hook, backend)
        if s.generation == nil { s.generation = try NftGeneration() }
        s.snapshot = try RulesSnapshot.take(try NftContext(), s.generation!, sets: rules.configuredSets)
        s.verified = nil
        return note
    }

    /// nil while the rules of the last apply are all in the kernel, else what went (see
    /// `RulesSnapshot` for how it is told). Without an apply (`run --no-apply`) the table is what
    /// must be there. A table `nft apply --force` re-recorded as its own keeps our chains: present.
    public func missing() throws(NftError) -> String? {
        try check().missing
    }

    /// `missing` (nil while our rules are in place), or the owner the table is recorded as now
    /// when somebody took it over (`nft apply --force`): then the rules are theirs, in place as
    /// they applied them, and putting ours back would undo what the operator forced.
    public func check() throws(NftError) -> (missing: String?, takenOverBy: TableOwner?) {
        try state.withLock { s throws(NftError) -> (missing: String?, takenOverBy: TableOwner?) in
            if s.generation == nil { s.generation = try NftGeneration() }
            let now = try s.generation!.current()
            if now == s.verified { return (nil, nil) }
            if let flags = try s.generation!.tableFlags(NftRuleset.table), flags & NftGeneration.tableDormant != 0 {
                return ("table \(NftRuleset.family) \(NftRuleset.table) is dormant: none of its chains sees a packet", nil)
            }
            let ctx = try NftContext()
            guard let chains = try RulesSnapshot.take(ctx).chains else {
                return ("table \(NftRuleset.family) \(NftRuleset.table) is gone", nil)
            }
            if s.last != nil, let current = try NftRuleset.owner(), current != owner {
                return (nil, current)
            }
            if let last = s.last, let snapshot = s.snapshot {
                if chains != snapshot.chains { return ("the chains of table \(NftRuleset.family) \(NftRuleset.table) changed", nil) }
                if try s.generation!.contents(NftRuleset.table, sets: last.rules.configuredSets) != snapshot.contents {
                    return ("the rules or the configured sets (\(last.rules.configuredSets.joined(separator: ", "))) of table \(NftRuleset.family) \(NftRuleset.table) changed", nil)
                }
                if last.backend == .xt {
                    let wanted = last.rules.xtablesRules(hook: last.hook)
                    let (present, shadowed) = try Xtables.scan(near: wanted)
                    let gone = wanted.filter { !present.contains($0) }
                    if !gone.isEmpty { return ("xtables rules gone: " + gone.map { $0.commandLine }.joined(separator: "; "), nil) }
                    let hidden = shadowed.filter { wanted.contains($0.rule) }
                    if !hidden.isEmpty {
                        return ("xtables rules no longer first in their chain (a rule before them hides packets from the agent): "
                                + hidden.map { "\($0.rule.tool) -t \($0.rule.table) \($0.rule.chain) rule \($0.number)" }.joined(separator: "; "), nil)
                    }
                }
            }
            s.verified = now
            return (nil, nil)
        }
    }

    /// Applies the rules of the last successful apply or reload again. Sets that survived keep
    /// their contents (an apply only declares them); a table that went comes back empty.
    public func reapply() throws(NftError) {
        try state.withLock { s throws(NftError) in
            guard let last = s.last else { throw NftError("no rules applied yet", rulesError: false) }
            _ = try applyAlone(&s, last.rules, hook: last.hook, backend: last.backend)
        }
    }

    /// At exit: removes what this agent owns (unless `keep`, --keep-rules), and returns nil when
    /// it removed the rules, else why they stay.
    public func release(keep: Bool) throws(NftError) -> String? {
        try state.withLock { s throws(NftError) -> String? in try releaseAlone(found: s.found, keep: keep) }
    }

    private func releaseAlone(found: TableOwner??, keep: Bool) throws(NftError) -> String? {
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
            return current == nil ? "the table was gone already" : nil
        }
    }
}
