/// The `packets` object of the score report (docs/output.md), counted exactly as its counting rules say
/// (which are tshark's, with reassembly off): every frame is judged on its own.
public struct PacketCounts: Equatable, Sendable {
    public var frames = 0
    /// Outermost network header is IPv4 / IPv6 and its fixed part parsed.
    public var ipv4 = 0
    public var ipv6 = 0
    /// TCP directly over that header with the 20 fixed bytes captured and a data offset ≥ 5.
    public var tcp = 0
    /// SYN without ACK / SYN with ACK / RST / FIN, over those TCP headers.
    public var syn = 0
    public var synack = 0
    public var rst = 0
    public var fin = 0
    /// IP or TCP header cut or inconsistent, TCP options cut included.
    public var malformed = 0

    public init() {}

    public init(frames: Int, ipv4: Int, ipv6: Int, tcp: Int, syn: Int, synack: Int, rst: Int, fin: Int,
                malformed: Int) {
        self.frames = frames; self.ipv4 = ipv4; self.ipv6 = ipv6; self.tcp = tcp
        self.syn = syn; self.synack = synack; self.rst = rst; self.fin = fin; self.malformed = malformed
    }

    @inlinable
    public mutating func add(_ p: ParsedPacket) {
        frames += 1
        switch p.network {
        case .ipv4: ipv4 += 1
        case .ipv6: ipv6 += 1
        case .none: break
        }
        if p.hasTCP {
            tcp += 1
            if p.flags.isSYN { syn += 1 }
            if p.flags.isSYNACK { synack += 1 }
            if p.flags.isRST { rst += 1 }
            if p.flags.isFIN { fin += 1 }
        }
        if p.malformed != nil { malformed += 1 }
    }

    /// The counts in docs/output.md's key order, for reports and test messages.
    public var fields: [(String, Int)] {
        [("frames", frames), ("ipv4", ipv4), ("ipv6", ipv6), ("tcp", tcp), ("syn", syn),
         ("synack", synack), ("rst", rst), ("fin", fin), ("malformed", malformed)]
    }
}
