import Testing
import PacketParser
import VerdictEngine
@testable import Conntrack

/// ctnetlink messages built byte by byte (the layout of nfnetlink_conntrack.h) read back as facts.
@Suite struct ConntrackMessageTests {
    static func attr(_ type: UInt16, _ payload: [UInt8], nested: Bool = false) -> [UInt8] {
        let len = UInt16(4 + payload.count)
        var out = withUnsafeBytes(of: len.littleEndian, Array.init) + withUnsafeBytes(of: (type | (nested ? 0x8000 : 0)).littleEndian, Array.init)
        out += payload
        while out.count % 4 != 0 { out.append(0) }
        return out
    }

    static let v4Source = attr(1, [198, 18, 2, 2]), v4Destination = attr(2, [198, 51, 100, 7])
    static let v6Source = attr(3, [0x20, 0x01, 0x0d, 0xb8, 0, 2] + [UInt8](repeating: 0, count: 9) + [2])
    static let v6Destination = attr(4, [0x20, 0x01, 0x0d, 0xb8, 0, 0xff] + [UInt8](repeating: 0, count: 9) + [9])

    /// `addresses`: the CTA_TUPLE_IP attributes instead of the family's own; `family`: nfgenmsg's.
    static func message(type: UInt16, v6: Bool = false, proto: UInt8 = 6, state: UInt8 = 1,
                        addresses: [UInt8]? = nil, family: UInt8? = nil) -> [UInt8] {
        let ip = addresses ?? (v6 ? v6Source + v6Destination : v4Source + v4Destination)
        let tuple = attr(1, ip, nested: true) + attr(2, attr(1, [proto]) + attr(2, [0x9c, 0x40]) + attr(3, [0x01, 0xbb]), nested: true)
        let body = [family ?? (v6 ? 10 : 2), 0, 0, 0] + attr(1, tuple, nested: true) + attr(4, attr(1, attr(1, [state]), nested: true), nested: true)
        let len = UInt32(16 + body.count)
        var out = withUnsafeBytes(of: len.littleEndian, Array.init) + withUnsafeBytes(of: type.littleEndian, Array.init)
        out += [0, 0] + [UInt8](repeating: 0, count: 8)
        return out + body
    }

    static func parse(_ bytes: [UInt8]) -> [ConntrackMessage.Parsed] {
        var out: [ConntrackMessage.Parsed] = []
        bytes.withUnsafeBytes { ConntrackMessage.forEach(in: $0) { out.append($0) } }
        return out
    }

    @Test func newAndDestroyEventsBecomeFacts() {
        let got = Self.parse(Self.message(type: 0x100, state: 2) + Self.message(type: 0x102, state: 7))
        #expect(got == [
            .fact(ConntrackFact(.present, source: IPAddress("198.18.2.2")!, sourcePort: 40000,
                                destination: IPAddress("198.51.100.7")!, destinationPort: 443, state: .synRecv)),
            .fact(ConntrackFact(.gone, source: IPAddress("198.18.2.2")!, sourcePort: 40000,
                                destination: IPAddress("198.51.100.7")!, destinationPort: 443, state: .timeWait)),
        ])
    }

    @Test func ipv6() {
        let got = Self.parse(Self.message(type: 0x100, v6: true))
        #expect(got == [.fact(ConntrackFact(.present, source: IPAddress("2001:db8:2::2")!, sourcePort: 40000,
                                            destination: IPAddress("2001:db8:ff::9")!, destinationPort: 443, state: .synSent))])
    }

    @Test func otherProtocolsAreIgnored() {
        #expect(Self.parse(Self.message(type: 0x100, proto: 17)) == [.ignored])
    }

    @Test func cutMessagesAreMalformedNotRead() {
        var m = Self.message(type: 0x100)
        // An attribute claiming more than the message holds.
        m[20 + 0] = 0xff
        #expect(Self.parse(m) == [.malformed])
        // A message length past the buffer.
        #expect(Self.parse(Array(Self.message(type: 0x100).prefix(30))) == [.malformed])
    }

    /// Found by the ctnetlink fuzzer: a tuple whose addresses are not of the message's family
    /// (nfgenmsg), or of two families, became a fact, an entry the kernel cannot have. Malformed.
    @Test func addressesOfAnotherFamilyAreMalformed() {
        #expect(Self.parse(Self.message(type: 0x100, v6: true, family: 0xff)) == [.malformed])
        #expect(Self.parse(Self.message(type: 0x100, v6: true, family: 2)) == [.malformed])
        #expect(Self.parse(Self.message(type: 0x100, family: 10)) == [.malformed])
        #expect(Self.parse(Self.message(type: 0x100, addresses: Self.v4Source + Self.v6Destination)) == [.malformed])
        #expect(Self.parse(Self.message(type: 0x100, v6: true, addresses: Self.v6Source + Self.v4Destination)) == [.malformed])
        // The message after a malformed one is still read.
        let next = Self.message(type: 0x102, v6: true)
        #expect(Self.parse(Self.message(type: 0x100, family: 10) + next).last == Self.parse(next).first)
    }

    /// Found by the fuzzer too: IPv6 attributes carrying IPv4-mapped addresses became a fact of
    /// IPv4 addresses (or of both kinds), aliasing the IPv4 flow. Ignored: no flow to mirror.
    @Test func ipv4MappedAddressesInAnIPv6EntryAreIgnored() {
        let mapped = Self.attr(4, [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 198, 51, 100, 7])
        #expect(Self.parse(Self.message(type: 0x100, v6: true, addresses: Self.v6Source + mapped)) == [.ignored])
        let both = Self.attr(3, [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 198, 18, 2, 2]) + mapped
        #expect(Self.parse(Self.message(type: 0x100, v6: true, addresses: both)) == [.ignored])
    }

    @Test func doneAndErrors() {
        let done: [UInt8] = [20, 0, 0, 0, 3, 0, 0, 0] + [UInt8](repeating: 0, count: 12)
        var err: [UInt8] = [20, 0, 0, 0, 2, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        err += withUnsafeBytes(of: Int32(-16).littleEndian, Array.init)
        #expect(Self.parse(done + err) == [.done, .error(-16)])
    }

    @Test func aRenderedRulesetWithCtIsSeen() {
        #expect(ConntrackReadiness.hasConntrackExpression("chain x {\n\tip daddr @a ct state invalid drop\n}"))
        #expect(!ConntrackReadiness.hasConntrackExpression("# ct state invalid drop\nchain x {\n}"))
    }
}
