import NFQueue
import VerdictEngine

/// Everything `reflectguard run` decided from its command line, handed to the agent.
public struct AgentSettings: Sendable {
    public var queues: ClosedRange<UInt16> = 0...0
    public var dryRun = false
    /// `--metrics HOST:PORT`; nil: no metrics endpoint.
    public var metrics: (host: String, port: UInt16)? = nil
    /// Kernel queue length and socket buffer (sized together, see QueueConfiguration).
    public var queueMaxLength: UInt32 = 4096
    public var receiveBufferBytes: Int? = nil
    public var copyRange: UInt32 = 256
    /// How long a recorded verdict may wait for its batch to be sent while packets keep coming.
    public var flushInterval: Int64 = 1_000_000
    /// How long receive batches must keep coming back full before the queue counts as
    /// overloaded and the protected networks are armed (0: never). 20 ms is far longer than a
    /// burst and far shorter than a queue of thousands takes to fill at flood rates.
    public var overloadAfter: Int64 = 20_000_000
    /// How long an armed victim prefix stays armed without a renewal, in seconds.
    public var armedTimeout: Double = 60
    public var logLevel: Logger.Level = .info

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
    /// Applies the ruleset (start) and returns the policy it carries.
    public var apply: @Sendable () throws -> Policy
    /// Re-reads the rules file, applies it atomically and returns the new policy. Throwing leaves
    /// the old rules in place.
    public var reload: @Sendable () throws -> Policy
    /// Removes the agent's own objects (exit, unless --keep-rules).
    public var remove: @Sendable () throws -> Void
    /// Adds a victim prefix to the armed set with a timeout in seconds (kernel enforcement);
    /// the flag asks to renew the timeout of an element already there.
    public var arm: @Sendable (CIDR, Double, Bool) throws -> Void

    public init(apply: @escaping @Sendable () throws -> Policy,
                reload: @escaping @Sendable () throws -> Policy,
                remove: @escaping @Sendable () throws -> Void,
                arm: @escaping @Sendable (CIDR, Double, Bool) throws -> Void) {
        self.apply = apply
        self.reload = reload
        self.remove = remove
        self.arm = arm
    }
}
