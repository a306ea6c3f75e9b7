/// Where the bytes handed to the parser start.
///
/// NFQUEUE delivers packets from the network header on (`.ipv4`/`.ipv6`/`.raw`); captures start
/// at their link layer. Raw values are libpcap's DLT numbers where one exists.
public enum LinkType: Sendable, Hashable {
    /// DLT_EN10MB (1): Ethernet II, with up to two 802.1Q / 802.1ad tags.
    case ethernet
    /// DLT_LINUX_SLL (113): Linux cooked capture v1, 16-byte header.
    case linuxSLL
    /// DLT_LINUX_SLL2 (276): Linux cooked capture v2, 20-byte header.
    case linuxSLL2
    /// DLT_RAW (12 / LINKTYPE_RAW 101): the IP header first, version from its first nibble.
    case raw
    /// LINKTYPE_IPV4 (228) / LINKTYPE_IPV6 (229): raw IP of a known version.
    case ipv4
    case ipv6
    /// DLT_NULL (0): BSD loopback, a 4-byte address family in the capturing host's byte order.
    case null
    /// DLT_LOOP (108): OpenBSD loopback, the 4-byte family in network byte order.
    case loop

    /// The link type for a libpcap DLT / LINKTYPE number, nil when ReflectGuard cannot read it.
    public init?(dlt: Int32) {
        switch dlt {
        case 1: self = .ethernet
        case 113: self = .linuxSLL
        case 276: self = .linuxSLL2
        case 12, 14, 101: self = .raw
        case 228: self = .ipv4
        case 229: self = .ipv6
        case 0: self = .null
        case 108: self = .loop
        default: return nil
        }
    }

    /// The LINKTYPE number written into pcap files this project generates.
    public var linktype: UInt32 {
        switch self {
        case .ethernet: return 1
        case .linuxSLL: return 113
        case .linuxSLL2: return 276
        case .raw: return 101
        case .ipv4: return 228
        case .ipv6: return 229
        case .null: return 0
        case .loop: return 108
        }
    }
}
