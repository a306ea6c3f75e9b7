import Foundation
import Lab
import PacketParser
@testable import Scoring
import Testing
import VerdictEngine
import TestSupport

/// Reports: the JSON schema of docs/output.md, labels arithmetic, CSV outputs, empty captures and the
/// command's handling of bad input.
@Suite struct ReportTests {
    static func protectedPolicy() -> Policy {
        var p = Policy()
        p.protected = PrefixSet([CIDR("198.18.2.0/24")!, CIDR("2001:db8:2::/64")!])
        return p
    }

    /// A small attack: two victims, three reflectors, with decisions given by hand.
    static func attackPipeline(labels: LabelTable? = nil) -> ScoringPipeline {
        let pl = ScoringPipeline(policy: protectedPolicy(), labels: labels)
        var t: Nanoseconds = 1_700_000_000 * second
        func feed(_ p: ParsedPacket, _ d: Decision) { pl.observe(p, at: t, decision: d); t += second / 2 }
        feed(tcp("198.18.2.2", 40000, "203.0.113.5", 443, .syn), Decision(.accept, .synTracked))
        feed(tcp("203.0.113.5", 443, "198.18.2.2", 40000, [.syn, .ack]), Decision(.accept, .solicitedSynack))
        for i in 0..<6 {
            feed(tcp("198.19.0.\(1 + i % 3)", 80, "198.18.2.7", 50000, [.syn, .ack]), Decision(.drop, .unsolicitedSynack))
        }
        feed(tcp("198.19.0.1", 80, "198.18.2.8", 50001, [.syn, .ack]), Decision(.drop, .unsolicitedSynack))
        feed(tcp("198.19.0.1", 80, "198.18.2.8", 50001, .rst), Decision(.drop, .rstRateLimit))
        feed(tcp("198.18.2.2", 40000, "203.0.113.5", 443, [.fin, .ack]), Decision(.accept, .notQueued))
        pl.finish()
        return pl
    }

    @Test func jsonFollowsTheSchema() throws {
        let r = Self.attackPipeline().report(source: "test.pcap", linkType: "EN10MB")
        let json = JSONReport.render(r)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(obj["schema"] as? String == "reflectguard.score/1")
        let input = try #require(obj["input"] as? [String: Any])
        #expect(input["source"] as? String == "test.pcap")
        #expect(input["link_type"] as? String == "EN10MB")
        #expect((input["first_ts"] as? Double).map { abs($0 - 1_700_000_000) < 1e-6 } == true)
        #expect((input["last_ts"] as? Double).map { abs($0 - 1_700_000_005) < 1e-6 } == true)
        let packets = try #require(obj["packets"] as? [String: Int])
        #expect(Set(packets.keys) == ["frames", "ipv4", "ipv6", "tcp", "syn", "synack", "rst", "fin", "malformed"])
        #expect(packets["frames"] == 11 && packets["synack"] == 8 && packets["rst"] == 1 && packets["fin"] == 1)
        #expect(obj["verdicts"] as? [String: Int] == ["accept": 3, "drop": 8])
        #expect(obj["reasons"] as? [String: Int] == ["syn-tracked": 1, "solicited-synack": 1, "unsolicited-synack": 7,
                                                    "rst-rate-limit": 1, "not-queued": 1])
        let sessions = try #require(obj["sessions"] as? [String: Any])
        #expect(sessions["total"] as? Int == 5)   // the legit one, three reflectors to .7, one to .8
        let ends = try #require(sessions["end_reasons"] as? [String: Int])
        #expect(Set(ends.keys) == Set(EndReason.allCases.map(\.rawValue)))
        #expect(ends["tcp-fin"] == 1 && ends["tcp-rst-from-server"] == 1 && ends["open"] == 3)
        let states = try #require(sessions["conn_states"] as? [String: Int])
        #expect(Set(states.keys) == Set(ConnState.allCases.map(\.rawValue)))
        let victims = try #require(obj["victims"] as? [[String: Any]])
        #expect(victims.count == 2)
        #expect(victims[0]["address"] as? String == "198.18.2.7")
        #expect(victims[0]["synack_dropped"] as? Int == 6)
        #expect(victims[0]["rst_dropped"] as? Int == 0)
        #expect(victims[0]["reflectors"] as? Int == 3)
        #expect(victims[1]["address"] as? String == "198.18.2.8")
        #expect(victims[1]["rst_dropped"] as? Int == 1)
        #expect(victims[1]["reflectors"] as? Int == 1)
        #expect(obj["labels"] == nil)
        // Key order is the contract's, every time.
        let order = ["\"schema\"", "\"input\"", "\"packets\"", "\"verdicts\"", "\"reasons\"", "\"sessions\"", "\"victims\""]
        let positions = order.map { json.range(of: $0)!.lowerBound }
        #expect(positions == positions.sorted())
    }

    @Test func labelsGivePrecisionAndRecall() throws {
        // Frames 1-11 of attackPipeline: 1-2 legit accepted, 3-8 attack dropped, 9 attack dropped,
        // 10 labelled legit but dropped (a false positive), 11 attack-rst accepted (a miss).
        var csv = "frame,label\n1,legit\n2,legit\n"
        for f in 3...9 { csv += "\(f),attack-synack\n" }
        csv += "10,legit\n11,attack-rst\n"
        let labels = try LabelTable(csv: csv)
        let r = Self.attackPipeline(labels: labels).report(source: "x", linkType: "EN10MB")
        let l = try #require(r.labels)
        // Drops: frames 3-10 (8). True positives 3-9 (7), false positive 10, false negative 11.
        #expect(l.truePositives == 7 && l.falsePositives == 1 && l.falseNegatives == 1)
        #expect(abs(l.precision - 7.0 / 8) < 1e-12)
        #expect(abs(l.recall - 7.0 / 8) < 1e-12)
        let per = Dictionary(uniqueKeysWithValues: l.perLabel.map { ($0.0, ($0.accept, $0.drop)) })
        #expect(per["legit"]! == (2, 1))
        #expect(per["attack-synack"]! == (0, 7))
        #expect(per["attack-rst"]! == (1, 0))
        #expect(per["unlabelled"] == nil)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(JSONReport.render(r).utf8)) as? [String: Any])
        let lj = try #require(obj["labels"] as? [String: Any])
        #expect((lj["precision"] as? Double).map { abs($0 - 0.875) < 1e-6 } == true)
        #expect((lj["per_label"] as? [String: [String: Int]])?["legit"] == ["accept": 2, "drop": 1])
    }

    @Test func badLabelFilesAreRejectedWithTheLine() {
        #expect(throws: LabelError.self) { try LabelTable(csv: "frame,verdict\n1,legit\n") }
        #expect(throws: LabelError.self) { try LabelTable(csv: "frame,label\n1,benign\n") }
        #expect(throws: LabelError.self) { try LabelTable(csv: "frame,label\nx,legit\n") }
        // The header must be line 1: an empty file, or blank lines before it, are not labels files.
        #expect(throws: LabelError.self) { try LabelTable(csv: "") }
        #expect(throws: LabelError.self) { try LabelTable(csv: "\n\n") }
        #expect(throws: LabelError.self) { try LabelTable(csv: "\nframe,label\n1,legit\n") }
        #expect((try? LabelTable(csv: "frame,label\r\n1,legit\r\n"))?.label(ofFrame: 1) == 1)
    }

    @Test func aHugeFrameNumberIsAnErrorNotAnAllocation() throws {
        // 99999999999 frames of 2 bytes would be 200 GB: rejected with the line before allocating.
        let e = #expect(throws: LabelError.self) { try LabelTable(csv: "frame,label\n99999999999,legit\n") }
        #expect(e?.description.hasPrefix("line 2: frame 99999999999") == true, "\(String(describing: e))")
        let edge = try LabelTable(csv: "frame,label\n1,legit\n")
        #expect(edge.label(ofFrame: LabelTable.maxFrame) == 0)
    }

    @Test func scoreRejectsBadLabelFilesWithOneErrorLine() throws {
        guard let bin = TestEnvironment.binary else { TestEnvironment.unavailable("the reflectguard binary is not built"); return }
        guard let capture = TestEnvironment.capture("sv_ipv4_options_syn.pcap") else {
            TestEnvironment.unavailable("no shared capture to score"); return
        }
        for (name, body) in [("huge.csv", "frame,label\n99999999999,legit\n"), ("empty.csv", "")] {
            let path = TestEnvironment.temporaryPath(name)
            try body.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let r = try TestEnvironment.run(bin, ["score", capture, "--labels", path])
            #expect(r.status == 1, "\(name): \(r.err)")
            #expect(r.err.hasPrefix("Error: \(path): "), "\(name): \(r.err)")
            #expect(r.err.split(separator: "\n").count == 1, "\(name): \(r.err)")
        }
    }

    @Test func emptyReportsRender() {
        let pl = ScoringPipeline(policy: Policy())
        pl.finish()
        let r = pl.report(source: "empty.pcap", linkType: "EN10MB")
        #expect(TextReport.render(r).contains("0 frames"))
        let html = HTMLReport.render(r)
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.hasSuffix("</html>\n"))
        #expect(!html.contains("http://") || !html.contains("src=\"http"))
        let json = JSONReport.render(r)
        #expect(json.contains("\"first_ts\": null"))
        #expect((try? JSONSerialization.jsonObject(with: Data(json.utf8))) != nil)
    }

    @Test func htmlIsSelfContained() {
        let html = HTMLReport.render(Self.attackPipeline().report(source: "<a&b>.pcap", linkType: "EN10MB"))
        #expect(!html.contains("<script"))
        #expect(!html.contains("<link"))
        #expect(!html.contains("src="))
        #expect(html.contains("&lt;a&amp;b&gt;.pcap"))
        #expect(html.components(separatedBy: "<svg").count - 1 == 4)
    }

    @Test func timelineMergesBucketsPastItsBound() {
        let pl = ScoringPipeline(policy: Self.protectedPolicy())
        let start: Nanoseconds = 1_700_000_000 * second
        // Two hours, one dropped SYN-ACK a second: more buckets than the bound.
        for i in 0..<7200 {
            pl.observe(tcp("198.19.0.1", 80, "198.18.2.7", 50000, [.syn, .ack]), at: start + Nanoseconds(i) * second,
                       decision: Decision(.drop, .unsolicitedSynack))
        }
        pl.finish()
        let r = pl.report(source: "x", linkType: "EN10MB")
        #expect(r.timelineWidth == 2)
        #expect(r.timeline.count == 3600)
        #expect(r.timeline.reduce(0) { $0 + $1.synackDropped } == 7200)
    }

    /// A carpet over an IPv6 /64 makes a new victim per packet: the table stops at its capacity,
    /// and the drops to hosts past it are counted, in the JSON too.
    @Test func victimTableIsBoundedAndCountsWhatItCannotKeep() throws {
        let pl = ScoringPipeline(policy: Self.protectedPolicy(), victimCapacity: 4)
        let start: Nanoseconds = 1_700_000_000 * second
        for i in 0..<10 {
            for _ in 0..<2 {
                pl.observe(tcp("2001:db8:ff::1", 80, "2001:db8:2::\(String(i + 1, radix: 16))", 50000, [.syn, .ack]),
                           at: start + Nanoseconds(i) * second, decision: Decision(.drop, .unsolicitedSynack))
            }
        }
        pl.finish()
        let r = pl.report(source: "x", linkType: "EN10MB")
        #expect(r.victimCount == 4)
        #expect(r.victimsOverflow == 12)
        #expect(r.victims.map(\.synackDropped) == [2, 2, 2, 2])
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(JSONReport.render(r).utf8)) as? [String: Any])
        #expect(obj["victims_total"] as? Int == 4)
        #expect(obj["victims_overflow"] as? Int == 12)
        #expect(TextReport.render(r).contains("12 drops to hosts past the table"))
    }

    // MARK: the command

    /// Writes `frames` to `name` in the tests' temporary directory, or in `directory` when a
    /// test has its own (tests run in parallel: two never share a file).
    static func writeCapture(_ name: String, frames: [[UInt8]], in directory: String? = nil) throws -> String {
        let path = directory.map { $0 + "/" + name } ?? TestEnvironment.temporaryPath(name)
        let w = try PcapWriter(path: path, link: .ethernet)
        for (i, f) in frames.enumerated() { try w.write(f, timestamp: 1_700_000_000 * second + Nanoseconds(i) * 1000) }
        try w.close()
        return path
    }

    static func frame(_ spec: FrameSpec) -> [UInt8] {
        var out: [UInt8] = []
        let n = FrameBuilder.build(spec, into: &out)
        return Array(out[0..<n])
    }

    @Test func verdictsCSVHasOneRowPerFrame() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let a = IPAddress("198.18.2.2")!, b = IPAddress("203.0.113.5")!, r = IPAddress("198.19.0.9")!
        var frames: [[UInt8]] = [
            Self.frame(FrameSpec(source: a, destination: b, sourcePort: 40000, destinationPort: 443, flags: .syn, sequence: 1000)),
            Self.frame(FrameSpec(source: b, destination: a, sourcePort: 443, destinationPort: 40000, flags: [.syn, .ack],
                                 sequence: 5000, acknowledgment: 1001)),
        ]
        for i in 0..<20 {
            frames.append(Self.frame(FrameSpec(source: r, destination: a, sourcePort: 80, destinationPort: UInt16(50000 + i),
                                               flags: [.syn, .ack], sequence: 9, acknowledgment: 77)))
        }
        frames.append([0x01, 0x02, 0x03])           // a runt: still gets its row
        let path = try Self.writeCapture("verdicts.pcap", frames: frames)
        let csv = TestEnvironment.temporaryPath("verdicts.csv")
        let res = try TestEnvironment.run(bin, ["score", path, "--protect", "198.18.2.0/24", "--verdicts", csv, "--format", "json"])
        #expect(res.status == 0, "\(res.err)")
        let lines = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.first == "frame,verdict,reason")
        #expect(lines.count == frames.count + 1)
        for (i, line) in lines.dropFirst().enumerated() {
            let f = line.split(separator: ",").map(String.init)
            #expect(f.count == 3 && f[0] == String(i + 1) && ["accept", "drop"].contains(f[1]) && !f[2].isEmpty, "\(line)")
        }
        // The same capture always gives the same verdicts.
        let again = try TestEnvironment.run(bin, ["score", path, "--protect", "198.18.2.0/24", "--format", "json"])
        #expect(again.out == res.out)
    }

    @Test func badInputsExitOneWithOneLine() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let garbage = TestEnvironment.temporaryPath("garbage.pcap")
        try Data("this is not a capture file at all\n".utf8).write(to: URL(fileURLWithPath: garbage))
        // A valid pcap header with LINKTYPE_USER0 (147), which ReflectGuard cannot parse.
        var header: [UInt8] = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 147, 0, 0, 0]
        header += [0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]
        let user0 = TestEnvironment.temporaryPath("user0.pcap")
        try Data(header).write(to: URL(fileURLWithPath: user0))
        for (path, needle) in [("/nonexistent/capture.pcap", "No such file"), (garbage, "garbage.pcap"), (user0, "link type")] {
            let r = try TestEnvironment.run(bin, ["score", path])
            #expect(r.status == 1, "\(path)")
            #expect(r.out.isEmpty)
            let lines = r.err.split(separator: "\n")
            #expect(lines.count == 1, "\(r.err)")
            #expect(r.err.contains(needle), "\(r.err)")
        }
        let usage = try TestEnvironment.run(bin, ["score", garbage, "--format", "xml"])
        #expect(usage.status == 2)
        let both = try TestEnvironment.run(bin, ["score", garbage, "--interface", "lo"])
        #expect(both.status == 2)
    }

    @Test func emptyCaptureScoresInEveryFormat() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let path = try Self.writeCapture("empty.pcap", frames: [])
        for format in ["text", "json", "html"] {
            let r = try TestEnvironment.run(bin, ["score", path, "--format", format])
            #expect(r.status == 0, "\(format): \(r.err)")
            #expect(!r.out.isEmpty)
        }
    }
}

@Test(arguments: [Int64(1_700_000_000_123_456_789), 1_700_000_000_000_000_000, 1_700_000_000_120_000_000,
                  1_700_000_000_000_000_001, 5, 0])
func csvSecondsMatchTheJSONFormat(_ ns: Int64) throws {
    let path = TestEnvironment.temporaryPath("seconds-\(ns).txt")
    let f = try BufferedFile(path: path)
    f.write(seconds: ns)
    try f.close()
    let written = try String(contentsOfFile: path, encoding: .utf8)
    #expect(written == JSONReport.seconds(ns))
}

@Test func addressIndexFindsEveryKeyAcrossGrowth() {
    let index = AddressIndex(hash: KeyedHash(1))
    var keys: [AddressKey] = []
    for i in 0..<20_000 {
        let a = i % 2 == 0 ? IPAddress(v4: UInt32(0xC613_0000) + UInt32(i)) : IPAddress("2001:db8:ff::\(String(i, radix: 16))")!
        keys.append(AddressKey(a))
        #expect(index.find(keys[i]) == nil)
        index.insert(keys[i], Int32(i))
    }
    #expect(index.count == 20_000)
    var wrong = 0
    for (i, k) in keys.enumerated() where index.find(k) != Int32(i) { wrong += 1 }
    #expect(wrong == 0)
    #expect(index.find(AddressKey(IPAddress("203.0.113.1")!)) == nil)
}
