import Synchronization
import VerdictEngine

/// The little the workers share with the rest of the agent, none of it on the per-packet path:
/// a stop flag, the current policy with a generation number (checked once per batch), the
/// enforcement hand-off and the dry-run results.
final class AgentShared: Sendable {
    let settings: AgentSettings
    let logger: Logger
    let enforcement: KernelEnforcement
    private let stopFlag = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)
    private let policyBox: Mutex<Policy>
    private let dryRunResults = Mutex<[DryRunTotals]>([])
    /// `state = conntrack`: the feed's verdict on replication (workers pass it to their engines
    /// once per batch), and the SYN-ACKs the workers settled without state (the feed's evidence).
    let replicationHealthy = Atomic<Bool>(true)
    let conntrackUnmatched = Atomic<UInt64>(0)

    init(settings: AgentSettings, policy: Policy, logger: Logger, enforcement: KernelEnforcement) {
        self.settings = settings
        self.logger = logger
        self.enforcement = enforcement
        policyBox = Mutex(policy)
    }

    var stopping: Bool { stopFlag.load(ordering: .acquiring) }
    func stop() { stopFlag.store(true, ordering: .releasing) }

    var policyGeneration: Int { generation.load(ordering: .acquiring) }

    func currentPolicy() -> (Policy, Int) {
        policyBox.withLock { p in (p, generation.load(ordering: .acquiring)) }
    }

    func replacePolicy(_ p: Policy) {
        policyBox.withLock { box in
            box = p
            generation.add(1, ordering: .releasing)
        }
    }

    func finishDryRun(_ r: DryRunRecorder) {
        let totals = r.finish()
        dryRunResults.withLock { $0.append(totals) }
    }

    func dryRunTotals() -> [DryRunTotals] { dryRunResults.withLock { $0 } }
}
