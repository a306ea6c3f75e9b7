import PacketParser
import Testing

/// docs/output.md's counting rules on single frames: flags are counted independently (a SYN+RST
/// counts as a SYN and as an RST), only over TCP headers that parsed, and a frame can be TCP and
/// malformed at once.
@Suite struct PacketCountsTests {
    static func counts(_ frames: [([UInt8], LinkType)]) -> PacketCounts {
        var c = PacketCounts()
        for (bytes, link) in frames { c.add(PacketParser.parse(bytes, link: link)) }
        return c
    }

    @Test func flagsCountIndependently() {
        let flags: [UInt8] = [0x02, 0x12, 0x10, 0x04, 0x14, 0x11, 0x06, 0x13, 0x05, 0x03]
        let c = Self.counts(flags.map { (Frame.eth(Frame.ipv4(Frame.tcp(flags: $0))), .ethernet) })
        #expect(c == PacketCounts(frames: 10, ipv4: 10, ipv6: 0, tcp: 10, syn: 3, synack: 2, rst: 4, fin: 4, malformed: 0))
    }

    @Test func onlyParsedTCPHeadersCount() {
        let syn = Frame.tcp(flags: 0x02, options: Frame.linuxSYNOptions)
        let c = Self.counts([
            (Frame.eth(Frame.ipv4(syn, flagsFragment: 100)), .ethernet),          // later fragment: IPv4, no TCP
            (Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x02, dataOffset: 4))), .ethernet),  // bad data offset
            (Array(Frame.eth(Frame.ipv4(syn))[0..<60]), .ethernet),                // options cut: TCP and malformed
            (Frame.eth([UInt8](repeating: 0, count: 28), type: 0x0806), .ethernet), // ARP
            (Frame.ipv4(Frame.ipv4(syn), proto: 4), .raw),                         // IPv4-in-IPv4: outer only
        ])
        #expect(c == PacketCounts(frames: 5, ipv4: 4, ipv6: 0, tcp: 1, syn: 1, synack: 0, rst: 0, fin: 0, malformed: 2))
    }
}
