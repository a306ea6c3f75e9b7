import Dispatch
import NFQueue
import Synchronization

/// Keeps the agent's rules in the kernel. `nft flush ruleset` (Debian's nftables.service starts
/// with it, on every start and reload), `nft delete table` or `iptables-nft -F` take them away
/// without a word: the queues then get nothing and the agent looks idle, not off. So the rules are
/// checked every `period` and, when they went, applied again (the last rules that applied, sets
/// kept where they survived), with an event each time.
///
/// A periodic check rather than nftables netlink events: each check is one NFT_MSG_GETGEN round
/// trip while nothing changed (measured here: an idle agent used 30 ms of CPU in 20 s, 40 checks
/// and everything else included), and a listing of the table's chains plus two `iptables-nft -S`
/// only after the ruleset's generation moved. It finds every way the rules go, the xtables ones
/// included, with one code path; events would save at most the half period of delay (measured:
/// rules back 0.5-0.6 s after `nft flush ruleset`) at the price of a second netlink client.
///
/// Re-applies every time: the agent's job is that protection stays on while it runs, and the way
/// to turn it off is to stop the agent (`reflectguard nft remove --force` under a running agent
/// is undone within a period, logged and counted each time).
final class RulesWatchdog: Sendable {
    private let logger: Logger
    private let period: Double
    /// false with `--no-apply`: the rules are somebody else's, so missing ones are only reported.
    private let repair: Bool
    private let missing: @Sendable () throws -> RulesPresence
    private let reapply: @Sendable () throws -> Void
    /// Told after each successful re-apply (the enforcement re-arms its victims).
    private let afterReapply: @Sendable () -> Void
    /// The current disappearance (nil while the rules are there), how many re-applies it took so
    /// far, and the last check error reported; who took the table over, once reported.
    private struct Watch {
        var gone: (why: String, since: Int64, attempts: Int)?
        var lastCheckError: String?
        var takenOverBy: String?
        /// Set by `cancel`: a check that was due runs no more.
        var cancelled = false
    }
    private let watch = SerialState(label: "reflectguard.rules-watchdog", Watch())

    let present = Atomic<UInt64>(1)
    let reapplied = Atomic<UInt64>(0)
    let reapplyFailures = Atomic<UInt64>(0)
    let checks = Atomic<UInt64>(0)

    init(logger: Logger, period: Double = 0.5, repair: Bool,
         missing: @escaping @Sendable () throws -> RulesPresence, reapply: @escaping @Sendable () throws -> Void,
         afterReapply: @escaping @Sendable () -> Void = {}) {
        self.logger = logger
        self.period = period
        self.repair = repair
        self.missing = missing
        self.reapply = reapply
        self.afterReapply = afterReapply
    }

    /// After the capabilities are dropped, like the enforcement's timer: its thread then holds
    /// CAP_NET_ADMIN alone, and so do the iptables-nft children a re-apply starts.
    func start() {
        watch.every(period, after: period) { [weak self] in self?.check(&$0) }
    }

    /// Returns once no check or re-apply runs or can start: the shutdown removes the rules next,
    /// and a re-apply racing it would put them back.
    func cancel() {
        watch.stop { $0.cancelled = true }
    }

    private func check(_ w: inout Watch) {
        guard !w.cancelled else { return }
        checks.add(1, ordering: .relaxed)
        let why: String?
        do {
            switch try missing() {
            case .present: why = nil
            case .missing(let detail): why = detail
            case .takenOver(let owner):
                // Protection is on, by rules that are no longer this agent's to repair or remove.
                if owner != w.takenOverBy {
                    logger.warning("rules-taken-over", [("owner", .string(owner)),
                                                       ("detail", .string("left as they are; not re-applied, not removed at exit"))])
                    w.takenOverBy = owner
                }
                why = nil
            }
            w.lastCheckError = nil
        } catch {
            // Not knowing is not "missing": report it once, and keep the gauge as it was.
            let text = "\(error)"
            if text != w.lastCheckError { logger.error("rules-check-failed", [("error", .string(text))]) }
            w.lastCheckError = text
            return
        }
        guard let why else {
            if let g = w.gone {
                present.store(1, ordering: .relaxed)
                logger.info("rules-present", [("missing_ms", .double(Double(monotonicNanoseconds() - g.since) / 1e6))])
                w.gone = nil
            }
            return
        }
        if w.gone == nil {
            present.store(0, ordering: .relaxed)
            w.gone = (why, monotonicNanoseconds(), 0)
            logger.warning("rules-missing", [("detail", .string(why)), ("reapply", .bool(repair))])
        }
        guard repair, var g = w.gone else { return }
        g.attempts += 1
        do {
            try reapply()
            let n = reapplied.add(1, ordering: .relaxed).newValue
            present.store(1, ordering: .relaxed)
            logger.warning("rules-reapplied", [("detail", .string(g.why)),
                                               ("reapply_ms", .double(Double(monotonicNanoseconds() - g.since) / 1e6)),
                                               ("afterReapplytotal", .from(n))])
            w.gone = nil
            afterReapply()
        } catch {
            reapplyFailures.add(1, ordering: .relaxed)
            // Every failure counts; the log says the first and then one in 60 (half a minute).
            if g.attempts % 60 == 1 {
                logger.error("rules-reapply-failed", [("error", .string("\(error)")), ("attempts", .from(g.attempts))])
            }
            w.gone = g
        }
    }
}
