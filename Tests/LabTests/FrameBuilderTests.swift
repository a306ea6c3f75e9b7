import Testing
import Lab
import PacketParser

@Suite struct FrameBuilderTests {
    let client = IPAddress("198.18.2.10")!
    let server = IPAddress("203.0.113.7")!

    @Test func linuxSYNOverDot1QHasLinuxOptionOrderAndValidChecksums() {
        var spec = FrameSpec(source: client, destination: server, sourcePort: 40000, destinationPort: 443,
                             flags: .syn, sequence: 0x1234_5678)
        spec.vlan = .dot1Q(vid: 100, pcp: 3)
        spec.ipID = 0xbeef
        spec.options = TCPStack.linux.synOptions(mss: 1460, tsValue: 0x0102_0304)
        let f = FrameBuilder.frame(spec)
        #expect(Array(f[12..<16]) == [0x81, 0x00, 0x60, 100])
        #expect(Array(f[16..<18]) == [0x08, 0x00])
        let d = Decoder.decode(f)!
        #expect(d.ipChecksumOK && d.tcpChecksumOK)
        #expect(d.tcpOptions == [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7])
        #expect(d.seq == 0x1234_5678 && d.isSYN && d.vlanTags == 1)
        #expect(Array(f[18 + 6..<18 + 8]) == [0x40, 0x00])   // DF
        #expect(Array(f[18 + 4..<18 + 6]) == [0xbe, 0xef])
    }

    @Test func windowsAndMacOptionOrders() {
        #expect(TCPStack.windows.synOptions(mss: 1460, tsValue: 0).bytes == [2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2])
        let mac = TCPStack.macOS.synOptions(mss: 1460, tsValue: 9).bytes
        #expect(mac.count == 24)
        #expect(Array(mac[0..<8]) == [2, 4, 5, 0xb4, 1, 3, 3, 6])
        #expect(Array(mac[20..<24]) == [4, 2, 0, 0])
    }

    @Test func synAckEchoesOnlyWhatTheSYNOffered() {
        let bare = TCPStack.linux.synAckOptions(mss: 1460, sack: false, timestamps: nil, windowScale: false)
        #expect(bare.bytes == [2, 4, 5, 0xb4])
        let full = TCPStack.linux.synAckOptions(mss: 1460, sack: true, timestamps: (1, 2), windowScale: true)
        #expect(full.bytes == [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7])
    }

    @Test(arguments: [0, 1, 7, 1000, 1459])
    func ipv4OptionsQinQAndOddPayloadsKeepChecksumsValid(payload: Int) {
        var spec = FrameSpec(source: client, destination: server, sourcePort: 1, destinationPort: 2,
                             flags: [.psh, .ack], sequence: 7, acknowledgment: 9)
        spec.vlan = .qinq(outer: 300, inner: 100)
        spec.ipv4Options = [0x94, 4, 0, 0, 1]   // padded to 8
        spec.payload = .pattern(length: payload, offset: 33)
        let f = FrameBuilder.frame(spec)
        #expect(Array(f[12..<14]) == [0x88, 0xa8])
        let d = Decoder.decode(f)!
        #expect(d.ipOptionsLength == 8)
        #expect(d.tpids == [0x88a8, 0x8100])
        #expect(d.payloadLength == payload)
        #expect(d.ipChecksumOK && d.tcpChecksumOK)
    }

    @Test func ipv6WithExtensionHeadersAndRawIPOutput() {
        var spec = FrameSpec(source: IPAddress("2001:db8:2::10")!, destination: IPAddress("2001:db8:1::7")!,
                             sourcePort: 50000, destinationPort: 443, flags: [.syn])
        spec.ipv6Extensions = [.hopByHop(length: 8), .routing, .fragment(identification: 5), .destinationOptions(length: 16)]
        spec.payload = .bytes([1, 2, 3])
        let raw = FrameBuilder.frame(spec, link: .raw)
        #expect(raw[0] >> 4 == 6)
        let d = Decoder.decode(raw, ethernet: false)!
        #expect(d.extensionHeaders == [0, 43, 44, 60])
        #expect(d.tcpChecksumOK)
        #expect(d.payloadLength == 3)
        // The same packet behind Ethernet is byte-identical after the 14-byte header.
        let eth = FrameBuilder.frame(spec)
        #expect(Array(eth[14...]) == raw)
    }

    /// One PadN option holds at most 255 bytes of padding: a longer header is filled with several
    /// (it used to trap on the length byte).
    @Test(arguments: [8, 16, 256, 264, 304, 520])
    func longDestinationOptionsArePaddedWithSeveralPadN(length: Int) {
        var spec = FrameSpec(source: IPAddress("2001:db8:ff::7")!, destination: IPAddress("2001:db8:2::2")!,
                             sourcePort: 443, destinationPort: 40000, flags: [.syn, .ack])
        spec.ipv6Extensions = [.destinationOptions(length: length)]
        let raw = FrameBuilder.frame(spec, link: .raw)
        let d = Decoder.decode(raw, ethernet: false)!
        #expect(d.extensionHeaders == [60])
        #expect(d.tcpChecksumOK)
        // The options, walked as a host walks them, end exactly at the header's end.
        var at = 40 + 2
        while at < 40 + length {
            if raw[at] == 0 { at += 1; continue }
            #expect(raw[at] == 1, "PadN at \(at)")
            at += 2 + Int(raw[at + 1])
        }
        #expect(at == 40 + length)
    }

    @Test func builderReusesItsBufferAcrossFrames() {
        var buffer: [UInt8] = []
        var spec = FrameSpec(source: client, destination: server, sourcePort: 1, destinationPort: 2)
        spec.payload = .pattern(length: 1400, offset: 0)
        let long = FrameBuilder.build(spec, into: &buffer)
        spec.payload = .none
        let short = FrameBuilder.build(spec, into: &buffer)
        #expect(long == 14 + 20 + 20 + 1400 && short == 54)
        #expect(Decoder.decode(Array(buffer[0..<short]))!.tcpChecksumOK)
    }

    @Test func parserAgreesWithTheBuilder() {
        var spec = FrameSpec(source: client, destination: server, sourcePort: 40000, destinationPort: 443,
                             flags: [.syn, .ack], sequence: 10, acknowledgment: 20)
        spec.vlan = .dot1Q(vid: 5)
        spec.options = TCPStack.linux.synOptions(mss: 1460, tsValue: 1)
        let p = PacketParser.parse(FrameBuilder.frame(spec), link: .ethernet)
        #expect(p.network == .ipv4 && p.malformed == nil)
        #expect(p.hasTCP && p.flags.isSYNACK && p.source == client && p.destination == server)
        #expect(p.sequence == 10 && p.acknowledgment == 20 && p.vlanTags == 1)
        #expect(p.optionSignature.hasMSS && p.optionSignature.mss == 1460 && p.optionSignature.windowScale == 7)
    }
}
