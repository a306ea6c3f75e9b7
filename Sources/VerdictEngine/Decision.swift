import PacketParser

public enum Verdict: UInt8, Sendable {
    case accept
    case drop

    public var token: String { self == .accept ? "accept" : "drop" }
}

/// Why a packet got its verdict. Every decision carries exactly one reason; the raw value is the
/// kebab-case token the reports and `--verdicts` use, and the README lists them all with their meaning.
public enum Reason: String, Sendable, CaseIterable {
    // SYN-ACKs
    case solicitedSynack = "solicited-synack"
    case unsolicitedSynack = "unsolicited-synack"
    case synackSent = "synack-sent"
    case synackScorePass = "synack-score-pass"
    case synackScoreDrop = "synack-score-drop"
    // SYNs
    case synTracked = "syn-tracked"
    // RSTs
    case rstRefused = "rst-refused"
    case rstTracked = "rst-tracked"
    case rstExact = "rst-exact"
    case rstInWindow = "rst-in-window"
    /// On a guarded flow: in the window but not exact, which the endpoint would only answer
    /// with a challenge ACK (RFC 5961 §3.2); a blind reset's best guess.
    case rstInexact = "rst-inexact"
    case rstOutOfWindow = "rst-out-of-window"
    case rstWithinRate = "rst-within-rate"
    case rstRateLimit = "rst-rate-limit"
    case rstSent = "rst-sent"
    case backscatter = "backscatter"
    case backscatterRateLimit = "backscatter-rate-limit"
    // Everything else
    case spoofedSource = "spoofed-source"
    case allowlisted = "allowlisted"
    case notProtected = "not-protected"
    case notQueued = "not-queued"
    case notTCP = "not-tcp"
    case malformed = "malformed"
    /// A packet of a tracked flow (track = full): accepted, and it moves the flow's sequence window.
    case flowTracked = "flow-tracked"
    /// Any other packet of a flow nobody tracks (track = full): accepted.
    case flowUntracked = "flow-untracked"
    /// A packet the rules queued to a protected host whose fixed TCP header lies past what the
    /// agent reads (the copy range, or more extension headers than the parser walks): the kernel
    /// queued it for its flags, so it is a SYN-ACK or RST (or with track = full any TCP) that
    /// cannot be checked. Dropped, and counted as an attack on the victim's prefix.
    case unreadableHeader = "unreadable-header"
    /// With `state = conntrack`: a SYN-ACK to a protected host whose reversed 4-tuple is a
    /// conntrack entry of this router in SYN_SENT, SYN_RECV or ESTABLISHED (the kernel's own, or
    /// one conntrackd replicated from the router that forwarded the SYN). Accepted.
    case solicitedConntrack = "solicited-conntrack"
    /// With `state = conntrack`: a SYN-ACK with no state yet, held while its state may still
    /// arrive (`ct_wait`). Provisional: `run` settles every held packet with a final reason, and
    /// no report counts this one.
    case stateAwaited = "state-awaited"
    /// With `state = conntrack` and `ct_miss = accept`: a SYN-ACK with no state while conntrack
    /// replication is stalled. Accepted.
    case conntrackMissAccepted = "ct-miss-accept"
    /// On a guarded flow seeded from the kernel's conntrack table at start that has sent nothing
    /// since: its window is unknown, so the RST is dropped until the protected side's next
    /// packet teaches it (a real peer's RST answers that packet, exact).
    case rstUnverified = "rst-unverified"
    /// An IPv6 packet to a protected host with an IPv4-mapped source or destination
    /// (`::ffff:a.b.c.d`): no real flow has one (RFC 4291 §2.5.5.2; a Linux host's TCP never
    /// sends to one over IPv6), so none is tracked to be answered. Dropped,
    /// without touching the IPv4 host's state its address would alias.
    case ipv4Mapped = "ipv4-mapped"
    /// The same packet sent by a protected host: accepted, and tracked nowhere, so it seeds no
    /// IPv4 flow.
    case ipv4MappedSent = "ipv4-mapped-sent"

    public var token: String { rawValue }
}

/// One verdict with its reason, and for ingress-only SYN-ACK scoring the evidence score (0-100).
public struct Decision: Equatable, Sendable {
    public var verdict: Verdict
    public var reason: Reason
    public var score: UInt8

    public init(_ verdict: Verdict, _ reason: Reason, score: UInt8 = 0) {
        self.verdict = verdict
        self.reason = reason
        self.score = score
    }
}

/// Which side of the router a packet arrived from, when the interfaces are known
/// (`inside_ifaces` / `outside_ifaces`). `.unknown` judges direction by addresses alone.
public enum Side: UInt8, Sendable {
    case unknown
    case inside
    case outside
}

/// Packet time in nanoseconds: a capture timestamp, or NFQA_TIMESTAMP / a monotonic clock inline.
/// The engine never reads a clock itself, so a capture always scores the same.
public typealias Nanoseconds = Int64
