import Rules
import VerdictEngine

/// Kernel enforcement per victim prefix: the agent adds a prefix under attack to the ruleset's
/// `armed4`/`armed6` set (nft/reflectguard.nft) with a timeout, and the kernel's conntrack-free
/// check then drops that prefix's unsolicited SYN-ACKs and meters its RSTs at line rate.
///
/// Keeps one libnftables context for the agent's lifetime (a new context per call would re-read
/// the ruleset cache each time). Not thread-safe: call from one thread (the agent's enforcement
/// queue).
public final class ArmedVictims {
    private let ctx: NftContext

    public init() throws(NftError) {
        ctx = try NftContext()
    }

    /// Adds `prefix` to the armed set for `timeout` seconds. `renew`: also when it is there
    /// already (an element present keeps its old expiry under a plain `add`, so renewing is
    /// delete-then-add in one transaction, with an `add` first because deleting a missing
    /// element fails). A plain add takes under 5 ms here, the renewing form 10-20 ms, so the
    /// first arming uses the plain one and renews right after.
    /// `rst`: the RST meter of a prefix under an RST attack (`rst_armed4`/`rst_armed6`).
    public func arm(_ prefix: CIDR, timeout: Double, renew: Bool = true, rst: Bool = false) throws(NftError) {
        let set = (rst ? "rst_armed" : "armed") + (prefix.isIPv4 ? "4" : "6")
        let seconds = max(1, Int(timeout.rounded(.up)))
        let add = "add element \(NftRuleset.family) \(NftRuleset.table) \(set) { \(prefix) timeout \(seconds)s }\n"
        let cmd = renew ? add + "delete element \(NftRuleset.family) \(NftRuleset.table) \(set) { \(prefix) }\n" + add : add
        let r = ctx.run(cmd)
        guard r.ok else {
            throw NftError("arming \(prefix): " + r.errors.split(separator: "\n").prefix(2).joined(separator: " "),
                           rulesError: false)
        }
    }
}
