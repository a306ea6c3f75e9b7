import Foundation
import Lab
import PacketParser
import Testing
import VerdictEngine
import TestSupport

/// `score` on a capture whose IPv6 packets carry IPv4-mapped addresses (`::ffff:a.b.c.d`): they
/// are not the IPv4 hosts those addresses name, and they change none of their state.
@Suite struct MappedAddressScoreTests {
    /// An Ethernet IPv6 frame with `src`/`dst` written in as given: `FrameSpec` writes an
    /// IPv4-mapped address as an IPv4 header, which is the very thing these frames are not.
    static func v6(_ src: String, _ dst: String, _ sport: UInt16, _ dport: UInt16, _ flags: TCPFlags,
                   seq: UInt32 = 0, ack: UInt32 = 0) -> [UInt8] {
        let spec = FrameSpec(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!,
                             sourcePort: sport, destinationPort: dport, flags: flags, sequence: seq, acknowledgment: ack)
        var f = ReportTests.frame(spec)
        for (offset, text) in [(14 + 8, src), (14 + 24, dst)] {
            let a = IPAddress(text)!
            for i in 0..<16 { f[offset + i] = a.bytes[i] }
        }
        return f
    }

    static func v4(_ src: String, _ dst: String, _ sport: UInt16, _ dport: UInt16, _ flags: TCPFlags,
                   seq: UInt32 = 0, ack: UInt32 = 0) -> [UInt8] {
        ReportTests.frame(FrameSpec(source: IPAddress(src)!, destination: IPAddress(dst)!, sourcePort: sport,
                                    destinationPort: dport, flags: flags, sequence: seq, acknowledgment: ack))
    }

    /// Each frame with the verdict and reason it must get. Before IPv6 packets were marked, the
    /// first got `syn-tracked` and so made the second `solicited-synack`, the third
    /// `unsolicited-synack` (an attack on the IPv4 host), the fourth `syn-tracked`.
    static let frames: [([UInt8], String)] = [
        // A protected IPv4 host's alias sends a SYN: not that host, so nothing is tracked...
        (v6("::ffff:198.18.2.2", "::ffff:203.0.113.5", 40000, 443, .syn, seq: 1000), "accept,not-protected"),
        // ...and the IPv4 SYN-ACK "answering" it is a reflection.
        (v4("203.0.113.5", "198.18.2.2", 443, 40000, [.syn, .ack], seq: 9, ack: 1001), "drop,unsolicited-synack"),
        // An IPv6 SYN-ACK to the alias is not to the IPv4 host.
        (v6("2001:db8:ff::7", "::ffff:198.18.2.2", 443, 40001, [.syn, .ack], seq: 9, ack: 77), "accept,not-protected"),
        // A protected IPv6 host's SYN to a mapped peer is accepted and kept nowhere...
        (v6("2001:db8:2::5", "::ffff:203.0.113.5", 40002, 443, .syn, seq: 5000), "accept,ipv4-mapped-sent"),
        // ...and what comes back from such a peer is dropped, not left unjudged.
        (v6("::ffff:203.0.113.5", "2001:db8:2::5", 443, 40002, [.syn, .ack], seq: 9, ack: 5001), "drop,ipv4-mapped"),
        (v6("::ffff:203.0.113.5", "2001:db8:2::5", 443, 40002, [.rst, .ack], seq: 10, ack: 5001), "drop,ipv4-mapped"),
        // The IPv4 host's own flow is untouched by all of it.
        (v4("198.18.2.2", "203.0.113.5", 40000, 443, .syn, seq: 2000), "accept,syn-tracked"),
        (v4("203.0.113.5", "198.18.2.2", 443, 40000, [.syn, .ack], seq: 9, ack: 2001), "accept,solicited-synack"),
    ]

    @Test func mappedAddressesInIPv6NeverAliasIPv4State() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let path = try ReportTests.writeCapture("mapped.pcap", frames: Self.frames.map(\.0))
        let csv = TestEnvironment.temporaryPath("mapped.csv")
        let res = try TestEnvironment.run(bin, ["score", path, "--protect", "198.18.2.0/24", "--protect", "2001:db8:2::/64",
                                                "--verdicts", csv, "--format", "json"])
        #expect(res.status == 0, "\(res.err)")
        let rows = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").dropFirst().map(String.init)
        #expect(rows == Self.frames.enumerated().map { "\($0.offset + 1),\($0.element.1)" })
        // The packet counts still call them IPv6, as tshark does.
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(res.out.utf8)) as? [String: Any])
        let packets = try #require(obj["packets"] as? [String: Any])
        #expect(packets["ipv6"] as? Int == 5 && packets["ipv4"] as? Int == 3)
    }
}
