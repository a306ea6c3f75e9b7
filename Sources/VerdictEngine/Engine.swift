import PacketParser

/// The verdict engine: one per NFQUEUE queue (the kernel's balancing hash is symmetric per host
/// pair, so engines share nothing). Pure Swift, no I/O, no clock: time comes with each packet.
public final class Engine {
    public private(set) var policy: Policy

    public init(policy: Policy, seed: UInt64) {
        self.policy = policy
    }

    /// Decides one packet the rules queued. `side` is where it arrived from, when known.
    public func decide(_ packet: ParsedPacket, at now: Nanoseconds, side: Side = .unknown) -> Decision {
        Decision(.accept, .notProtected)   // placeholder until the engine lands
    }
}
