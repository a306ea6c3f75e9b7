import Flowspec
import NFQueue
import VerdictEngine

/// Everything `reflectguard run` decided from its command line, handed to the agent.
public struct AgentSettings: Sendable {
    public var queues: ClosedRange<UInt16> = 0...0
    public var dryRun = false
    /// `--metrics HOST:PORT`; nil: no metrics endpoint. HOST is an address or a name to resolve;
    /// empty (`:PORT`) means every interface, IPv6 and IPv4.
    public var metrics: (host: String, port: UInt16)? = nil
    /// The build's version, for `reflectguard_build_info`.
    public var version = "unknown"
    /// Kernel queue length and socket buffer (sized together, see QueueConfiguration).
    public var queueMaxLength: UInt32 = 4096
    public var receiveBufferBytes: Int? = nil
    public var copyRange = UInt32(Policy.defaultCopyRange)
    /// How long a recorded verdict may wait for its batch to be sent while packets keep coming.
    public var flushInterval: Int64 = 1_000_000
    /// How long receive batches must keep coming back full before the queue counts as
    /// overloaded and the protected networks are armed (0: never). 20 ms is far longer than a
    /// burst and far shorter than a queue of thousands takes to fill at flood rates.
    public var overloadAfter: Int64 = 20_000_000
    /// How long an armed victim prefix stays armed without a renewal, in seconds.
    public var armedTimeout: Double = 60
    public var logLevel: Logger.Level = .info
    /// `kernel_path` and what the XDP path needs to know about the rules.
    public var xdp = XDPSettings()
    /// BGP Flowspec escalation (the ruleset's flowspec_* defines); nil: off.
    public var flowspec: FlowspecConfig? = nil

    public init() {}

    func queueConfiguration(_ q: UInt16) -> QueueConfiguration {
        var c = QueueConfiguration(queue: q)
        c.maxLength = queueMaxLength
        c.receiveBufferBytes = receiveBufferBytes
        c.copyRange = copyRange
        return c
    }
}

/// How the agent touches the rules and the kernel's sets: supplied by the caller (the run
/// command wires the Rules/NftBackend API in), so the agent's lifecycle can be tested alone.
public struct RulesHooks: Sendable {
    /// Applies the ruleset at start, after everything that can fail without touching the kernel
    /// has been checked. Returns a sentence for the log when it adopted a table already there.
    public var apply: @Sendable () throws -> String?
    /// Re-reads and resolves the rules file without touching the kernel, and returns what it
    /// carries plus the step that applies it. The agent validates the plan first and applies it
    /// only when it is acceptable, so a refused reload leaves the old rules in the kernel.
    public var reload: @Sendable () throws -> ReloadPlan
    /// At exit: removes what the agent owns (the flag: --keep-rules, remove nothing). Returns
    /// nil when it removed the rules, else why they stay.
    public var release: @Sendable (Bool) throws -> String?
    /// Adds a victim prefix to the armed set with a timeout in seconds (kernel enforcement);
    /// the flag asks to renew the timeout of an element already there.
    public var arm: @Sendable (CIDR, Double, Bool) throws -> Void
    /// The same for the RST meter of a prefix whose RST attack outgrew the queue.
    public var armRST: @Sendable (CIDR, Double, Bool) throws -> Void
    /// Whether the rules are in the kernel (the rules watchdog asks twice a second, from its own
    /// thread).
    public var missing: @Sendable () throws -> RulesPresence
    /// Applies the rules of the last successful apply or reload again.
    public var reapply: @Sendable () throws -> Void
    /// The table's named counters (the kernel's own drops), read at each metrics scrape.
    public var kernelCounters: @Sendable () throws -> [KernelCount]

    public init(apply: @escaping @Sendable () throws -> String?,
                reload: @escaping @Sendable () throws -> ReloadPlan,
                release: @escaping @Sendable (Bool) throws -> String?,
                arm: @escaping @Sendable (CIDR, Double, Bool) throws -> Void,
                missing: @escaping @Sendable () throws -> RulesPresence = { .present },
                reapply: @escaping @Sendable () throws -> Void = {},
                kernelCounters: @escaping @Sendable () throws -> [KernelCount] = { [] },
                armRST: @escaping @Sendable (CIDR, Double, Bool) throws -> Void = { _, _, _ in }) {
        self.armRST = armRST
        self.apply = apply
        self.reload = reload
        self.release = release
        self.arm = arm
        self.missing = missing
        self.reapply = reapply
        self.kernelCounters = kernelCounters
    }
}

/// A resolved, not yet applied, rules reload (see `RulesHooks.reload`).
public struct ReloadPlan: Sendable {
    public var policy: Policy
    public var queues: ClosedRange<UInt16>
    public var armedTimeout: Double
    /// The new rules' Flowspec escalation policy (nil: off), checked like the start's.
    public var flowspec: FlowspecConfig?
    /// Loads the new ruleset into the kernel atomically; throwing leaves the old one.
    public var apply: @Sendable () throws -> Void

    public init(policy: Policy, queues: ClosedRange<UInt16>, armedTimeout: Double, flowspec: FlowspecConfig? = nil,
                apply: @escaping @Sendable () throws -> Void) {
        self.policy = policy
        self.queues = queues
        self.armedTimeout = armedTimeout
        self.flowspec = flowspec
        self.apply = apply
    }
}

/// What the rules watchdog finds.
public enum RulesPresence: Sendable, Equatable {
    /// The rules of the last apply are all in the kernel.
    case present
    /// Something of them went (the detail says what): put them back.
    case missing(String)
    /// The table is recorded as somebody else's now (`nft apply --force`): their rules are in
    /// place and are left alone.
    case takenOver(by: String)
}
