import Captures
import Foundation
import Lab
import Testing
import TestSupport

/// Compressed captures as they go wrong: members or frames concatenated (`cat a.gz b.gz`, what
/// gzip -d reads as one stream), data after the end, and a decompression bomb, a small file that
/// expands far past memory.
@Suite struct DecompressionHostileTests {
    /// (format, command that compresses standard input to standard output)
    static let formats = [("gzip", "gzip -c"), ("zstd", "zstd -q -c"), ("xz", "xz -c")]

    /// A small raw-IP capture (200 frames, each different) and its bytes.
    static func plainCapture(_ name: String) throws -> (path: String, bytes: Data) {
        let path = TestEnvironment.temporaryPath("hostile-\(name).pcap")
        let w = try PcapWriter(path: path, link: .raw)
        for i in 0..<200 {
            let frame: [UInt8] = [0x45, 0, 0, 20, UInt8(i >> 8), UInt8(i & 0xff), 0, 0, 64, 6, 0, 0,
                                  198, 18, 2, UInt8(i % 250), 198, 51, 100, 7] + [UInt8](repeating: UInt8(i & 0xff), count: i % 50)
            try w.write(frame, timestamp: 1_700_000_000_000_000_000 + Int64(i) * 1_000_000)
        }
        try w.close()
        return (path, try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func compress(_ bytes: Data, _ command: String, _ tool: String) throws -> Data {
        let input = TestEnvironment.temporaryPath("hostile-in-\(UInt32.random(in: 0...UInt32.max))")
        let output = input + ".out"
        defer { unlink(input); unlink(output) }
        try bytes.write(to: URL(fileURLWithPath: input))
        let r = try TestEnvironment.run("/bin/sh", ["-c", "\(command) < '\(input)' > '\(output)'"])
        try #require(r.status == 0, "\(tool): \(r.err)")
        return try Data(contentsOf: URL(fileURLWithPath: output))
    }

    /// Every frame (bytes and time) until the end, and the error that ended it, if any.
    static func frames(_ path: String) throws -> (frames: [[UInt8]], times: [Int64], error: String?) {
        let r = try CaptureReader(path: path)
        var frames: [[UInt8]] = [], times: [Int64] = []
        do {
            while let f = try r.next() { frames.append(Array(f.bytes)); times.append(f.timestamp) }
        } catch let e as CaptureError {
            return (frames, times, e.description)
        }
        return (frames, times, nil)
    }

    /// The capture cut in three at byte offsets inside records, each part compressed alone and the
    /// three concatenated: read as the plain file.
    @Test(arguments: formats)
    func concatenatedMembersReadAsOneStream(_ tool: String, _ command: String) throws {
        guard TestEnvironment.which(tool) != nil else { return TestEnvironment.unavailable("\(tool) is not installed") }
        let plain = try Self.plainCapture("concat-\(tool)")
        let cuts = [0, plain.bytes.count / 3 + 7, 2 * plain.bytes.count / 3 + 3, plain.bytes.count]
        var joined = Data()
        for i in 0..<3 { joined += try Self.compress(plain.bytes.subdata(in: cuts[i]..<cuts[i + 1]), command, tool) }
        let path = plain.path + ".3." + tool
        try joined.write(to: URL(fileURLWithPath: path))
        let expected = try Self.frames(plain.path)
        let got = try Self.frames(path)
        #expect(expected.frames.count == 200 && expected.error == nil)
        #expect(got.frames == expected.frames && got.times == expected.times)
        #expect(got.error == nil, "\(got.error ?? "")")
        #expect(try CaptureReader(path: path).compression?.rawValue == tool)
    }

    /// Bytes after the end: every frame is read first, then one error naming the file; zeros
    /// after gzip data are padding (gzip -d ignores them, so do we), as are whole zero words after
    /// xz data (the format's stream padding).
    @Test(arguments: formats)
    func dataAfterTheEndComesAfterEveryFrame(_ tool: String, _ command: String) throws {
        guard TestEnvironment.which(tool) != nil else { return TestEnvironment.unavailable("\(tool) is not installed") }
        let plain = try Self.plainCapture("trailing-\(tool)")
        let compressed = try Self.compress(plain.bytes, command, tool)
        let garbage = plain.path + ".garbage." + tool
        try (compressed + Data("GARBAGE, not a member".utf8)).write(to: URL(fileURLWithPath: garbage))
        let g = try Self.frames(garbage)
        #expect(g.frames.count == 200)
        let error = try #require(g.error, "garbage after the end is reported")
        #expect(error.contains(garbage) && !error.contains("\n"), "\(error)")
        if tool == "gzip" { #expect(error.contains("after the end of the gzip data is not gzip"), "\(error)") }

        guard tool != "zstd" else { return }   // zstd -d refuses zeros after a frame too
        let padded = plain.path + ".padded." + tool
        try (compressed + Data(count: 4096)).write(to: URL(fileURLWithPath: padded))
        let p = try Self.frames(padded)
        #expect(p.frames.count == 200 && p.error == nil, "\(p.error ?? "")")
    }

    /// A bomb: a pcap header and 16 copies of a member holding 64 MiB of records (1 GiB of
    /// capture from a few hundred KB). `score` reads it through its fixed buffers: its peak memory
    /// stays within 64 MiB of what the first member alone takes (measured by /usr/bin/time),
    /// whatever the expansion.
    @Test(arguments: formats)
    func aBombIsScoredInBoundedMemory(_ tool: String, _ command: String) throws {
        guard TestEnvironment.which(tool) != nil else { return TestEnvironment.unavailable("\(tool) is not installed") }
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/time") else { return TestEnvironment.unavailable("no /usr/bin/time") }
        // LINKTYPE_ETHERNET, snap length 65535; records of 65535 zero bytes (no IP in them).
        var header = Data([0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0])
        var record = Data([0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0])
        record += Data(count: 65535)
        var records = Data(capacity: record.count * 1024)
        for _ in 0..<1024 { records += record }
        header += records
        let first = try Self.compress(header, command, tool)
        let more = try Self.compress(records, command, tool)
        records = Data()
        let small = TestEnvironment.temporaryPath("hostile-bomb-1.\(tool)")
        let bomb = TestEnvironment.temporaryPath("hostile-bomb-16.\(tool)")
        defer { unlink(small); unlink(bomb) }
        try first.write(to: URL(fileURLWithPath: small))
        var joined = first
        for _ in 0..<15 { joined += more }
        try joined.write(to: URL(fileURLWithPath: bomb))
        #expect(joined.count < 16 << 20, "\(joined.count) bytes expand to 1 GiB")

        func score(_ path: String) throws -> (frames: Int, peakKiB: Int) {
            let r = try TestEnvironment.run("/usr/bin/time", ["-f", "peak %M", bin, "score", path, "--format", "json"])
            try #require(r.status == 0, "\(r.err)")
            let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
            let frames = (json?["packets"] as? [String: Any])?["frames"] as? Int ?? -1
            let peak = r.err.split(separator: "\n").last { $0.hasPrefix("peak ") }.flatMap { Int($0.dropFirst(5)) } ?? -1
            return (frames, peak)
        }
        let one = try score(small), sixteen = try score(bomb)
        #expect(one.frames == 1024 && sixteen.frames == 16 * 1024)
        #expect(one.peakKiB > 0 && sixteen.peakKiB < one.peakKiB + 64 * 1024,
                "peak \(sixteen.peakKiB) KiB for 1 GiB against \(one.peakKiB) KiB for 64 MiB")
    }
}
