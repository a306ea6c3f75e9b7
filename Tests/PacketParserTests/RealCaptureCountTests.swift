import Captures
import Foundation
import PacketParser
import Testing
import TestSupport

/// The counts on the real captures in `shared/captures` equal tshark's (their `.tshark.json`,
/// made with reassembly off). Why some frames are not counted, as tshark shows them:
/// zeek_ipv6_exthdr_http's frames 1-2 are ICMPv6 (38 IPv6, 36 TCP); evilfingers has ARP frames
/// (2020 frames, 2011 IPv4) and four UDP SSDP frames (2011 IPv4, 2007 TCP).
@Suite struct RealCaptureCountTests {
    static let names = [
        "cs_http_ip4and6.pcapng", "evilfingers_nmap_syn_scan.pcap", "ppa_http_client_refuse.pcap",
        "sv_ipv4_options_syn.pcap", "sv_linux_sll_multi.pcap", "zeek_ipv6_exthdr_http.pcap",
        "zeek_tcp_truncated_header.pcap",
    ]

    @Test(arguments: names)
    func countsEqualTshark(_ name: String) throws {
        let capture = TestEnvironment.capturesDirectory.appendingPathComponent(name)
        let expectedFile = capture.appendingPathExtension("tshark.json")
        guard FileManager.default.fileExists(atPath: capture.path),
              let data = FileManager.default.contents(atPath: expectedFile.path) else {
            TestEnvironment.unavailable("capture \(capture.path) or its .tshark.json is absent")
            return
        }
        let expected = try JSONDecoder().decode([String: Int].self, from: data)
        let counts = try Self.count(capture.path)
        for (key, value) in counts.fields where expected[key] != nil {
            #expect(value == expected[key], "\(name): \(key) is \(value), tshark says \(expected[key]!)")
        }
        // The parser's fast path must agree frame by frame with the reference on real traffic.
        #expect(try Self.count(capture.path, scalar: true) == counts)
    }

    /// The shared captures merged into one pcapng file by mergecap (Ethernet, Linux cooked and
    /// raw IPv4 interfaces, each with its own snap length): the counts are the sums of tshark's.
    @Test func mergedSharedCapturesCountTheSumOfTsharks() throws {
        guard let mergecap = TestEnvironment.which("mergecap") else { return TestEnvironment.unavailable("mergecap is not installed") }
        var inputs: [String] = []
        var expected: [String: Int] = [:]
        for name in Self.names {
            let capture = TestEnvironment.capturesDirectory.appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: capture.path + ".tshark.json"),
                  FileManager.default.fileExists(atPath: capture.path) else { continue }
            inputs.append(capture.path)
            for (k, v) in try JSONDecoder().decode([String: Int].self, from: data) { expected[k, default: 0] += v }
        }
        guard inputs.count == Self.names.count else { return TestEnvironment.unavailable("shared captures are absent") }
        let merged = TestEnvironment.temporaryPath("shared-merged.pcapng")
        let r = try TestEnvironment.run(mergecap, ["-F", "pcapng", "-w", merged] + inputs)
        try #require(r.status == 0, "mergecap: \(r.err)")
        let counts = try Self.count(merged)
        for (key, value) in counts.fields where expected[key] != nil {
            #expect(value == expected[key], "merged: \(key) is \(value), tshark's sum is \(expected[key]!)")
        }
        #expect(counts.frames == expected["frames"])
    }

    static func count(_ path: String, scalar: Bool = false) throws -> PacketCounts {
        let reader = try CaptureReader(path: path)
        var counts = PacketCounts()
        var packet = ParsedPacket()
        while let frame = try reader.next() {
            if scalar {
                ScalarParser.parse(frame.bytes, link: frame.link ?? reader.linkType, into: &packet)
            } else {
                PacketParser.parse(frame.bytes, link: frame.link ?? reader.linkType, into: &packet)
            }
            counts.add(packet)
        }
        return counts
    }
}
