/// The decoded headers of one packet: what every later stage (engine, scoring, sessions) reads.
///
/// A small value type, decoded into a reused instance: no allocation per packet. IPv4 addresses
/// are stored IPv4-mapped (`::ffff:a.b.c.d`) so that one 16-byte vector serves both families;
/// `network` says which family the header really was.
public struct ParsedPacket: Equatable, Sendable {
    /// The outermost network header, when it parsed (docs/output.md `ipv4` / `ipv6` counts).
    public var network: NetworkLayer = .none
    /// A TCP header of at least the fixed 20 bytes is present directly over that IP header
    /// (docs/output.md `tcp` count). Flags, ports, seq and ack are valid only when this is true.
    public var hasTCP: Bool = false
    /// Why the frame is malformed, if it is: an IP or TCP header cut or inconsistent. A frame can
    /// be both `hasTCP` and malformed (TCP options cut by the snap length).
    public var malformed: MalformedReason? = nil

    /// The upper-layer protocol number after the IPv6 extension-header walk (6 for TCP).
    public var ipProtocol: UInt8 = 0
    /// A fragment with a non-zero offset (it carries no transport header).
    public var isLaterFragment: Bool = false
    /// Number of 802.1Q / 802.1ad tags in front of the network header.
    public var vlanTags: UInt8 = 0
    /// IPv4 TTL or IPv6 hop limit.
    public var ttl: UInt8 = 0
    /// An IPv6 header whose source or destination is IPv4-mapped (`::ffff:a.b.c.d`). Stored as
    /// they are, such addresses equal the IPv4 host's, so whatever keys state by address must
    /// tell them apart by this flag: an IPv6 packet is not that host's traffic. RFC 4291
    /// §2.5.5.2 keeps them off the wire, but Linux (6.18, checked in a namespace) routes such
    /// packets either way and every netfilter hook sees them; only its TCP refuses a SYN from one.
    public var ipv4MappedInIPv6: Bool = false

    public var source: IPAddress = .zero
    public var destination: IPAddress = .zero
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    public var sequence: UInt32 = 0
    public var acknowledgment: UInt32 = 0
    public var flags: TCPFlags = []
    public var window: UInt16 = 0
    /// TCP payload length from the IP lengths (not what was captured): what TCP Fast Open data
    /// on a SYN adds to the expected acknowledgment number.
    public var payloadLength: UInt16 = 0
    /// A compact fingerprint of the TCP options: see `TCPOptionSignature`.
    public var optionSignature: TCPOptionSignature = .none

    /// Offsets from the start of the bytes handed to the parser.
    public var networkOffset: UInt16 = 0
    public var transportOffset: UInt16 = 0

    public init() {}

    public var isIPv4: Bool { network == .ipv4 }
    public var isIPv6: Bool { network == .ipv6 }
}

public enum NetworkLayer: UInt8, Sendable {
    case none = 0
    case ipv4 = 4
    case ipv6 = 6
}

/// Why a frame is malformed. The raw value is the kebab-case token reports use.
public enum MalformedReason: String, Sendable, CaseIterable {
    /// The link-layer header is cut short.
    case truncatedLink = "truncated-link"
    /// Fewer bytes than a minimal IP header.
    case truncatedIP = "truncated-ip"
    /// The version nibble says neither 4 nor 6 where an IP header was announced.
    case badVersion = "bad-version"
    /// IPv4 IHL below 5.
    case badIHL = "bad-ihl"
    /// IPv4 total length (or IPv6 payload length) smaller than the headers it must hold, the
    /// fixed 20 bytes of TCP included (outside a first fragment).
    case badTotalLength = "bad-total-length"
    /// An IPv6 extension header is cut short.
    case truncatedExtensionHeader = "truncated-ext-header"
    /// More IPv6 extension headers than the bounded walk accepts.
    case extensionHeaderChainTooLong = "ext-header-chain-too-long"
    /// Fewer than the 20 fixed bytes of the TCP header at hand (snap length or copy range),
    /// though the IP length holds them.
    case truncatedTCP = "truncated-tcp"
    /// TCP data offset below 5, or beyond the IP payload.
    case badDataOffset = "bad-data-offset"
    /// The TCP options are cut (snap length or copy range). An option whose own length runs past
    /// the header is not malformed: tshark only notes it, and the counts follow tshark.
    case truncatedTCPOptions = "truncated-tcp-options"
}

/// TCP header flags (RFC 9293 §3.1; ECE/CWR from RFC 3168).
public struct TCPFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)

    /// SYN set and ACK clear (docs/output.md `syn`).
    public var isSYN: Bool { rawValue & 0x12 == 0x02 }
    /// SYN and ACK set (docs/output.md `synack`).
    public var isSYNACK: Bool { rawValue & 0x12 == 0x12 }
    public var isRST: Bool { rawValue & 0x04 != 0 }
    public var isFIN: Bool { rawValue & 0x01 != 0 }
}
