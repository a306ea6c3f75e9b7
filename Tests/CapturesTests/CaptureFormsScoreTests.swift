import Captures
import Foundation
import Testing
import TestSupport

/// `score` on captures as operators keep them: compressed (gzip, zstd, xz, told by content),
/// split into file sets (`editcap -c`, a ring whose names are not in time order, a directory),
/// from standard input; and the tcpdump habits (`-r`, `-i`, `--filter`, `-` for outputs). The
/// report and the verdicts must be the ones the plain single file gives.
@Suite(.serialized) struct CaptureFormsScoreTests {
    static let protect = ["--protect", "198.18.0.0/15", "--protect", "2001:db8::/32"]

    /// A generated mixed capture (attacks and legitimate traffic), made once per test process.
    static let capture: String? = {
        guard let bin = TestEnvironment.binary else { return nil }
        let path = TestEnvironment.temporaryPath("forms-mixed.pcap")
        guard let r = try? TestEnvironment.run(bin, ["lab", "gen", "--scenario", "mixed", "--packets", "30000", "--seed", "5",
                                                     "--out", path]), r.status == 0 else { return nil }
        return path
    }()

    static func tool(_ name: String) -> String? {
        if let t = TestEnvironment.which(name) { return t }
        TestEnvironment.unavailable("\(name) is not installed")
        return nil
    }

    /// The JSON report without `input.source` and `input.files` (they name the inputs), and the
    /// verdicts CSV's first three columns.
    static func score(_ args: [String]) throws -> (report: String, verdicts: [Substring], err: String) {
        let bin = try #require(TestEnvironment.binary)
        let csv = TestEnvironment.temporaryPath("forms-verdicts-\(UInt32.random(in: 0...UInt32.max)).csv")
        defer { unlink(csv) }
        let r = try TestEnvironment.run(bin, ["score"] + args + protect + ["--format", "json", "--verdicts", csv])
        try #require(r.status == 0, "score \(args): exit \(r.status): \(r.err.prefix(500))")
        var json = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        var input = json["input"] as? [String: Any] ?? [:]
        input["source"] = nil
        input["files"] = nil
        json["input"] = input
        let report = String(decoding: try JSONSerialization.data(withJSONObject: json, options: .sortedKeys), as: UTF8.self)
        let rows = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
        return (report, rows, r.err)
    }

    static func firstThreeColumns(_ rows: [Substring]) -> [String] {
        rows.map { $0.split(separator: ",", omittingEmptySubsequences: false).prefix(3).joined(separator: ",") }
    }

    @Test func compressedCapturesGiveTheSameReport() throws {
        guard let plain = Self.capture else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let base = try Self.score([plain])
        #expect(base.report.contains("\"drop\""))
        for (tool, suffix) in [("gzip", "gz"), ("zstd", "zst"), ("xz", "xz")] {
            guard let t = Self.tool(tool) else { continue }
            let out = plain + "." + suffix
            _ = try TestEnvironment.run("/bin/sh", ["-c", "'\(t)' -c < '\(plain)' > '\(out)'"])
            // Told by content: the same file under a name that says nothing.
            let renamed = TestEnvironment.temporaryPath("forms-\(suffix).capture")
            _ = try TestEnvironment.run("/bin/cp", [out, renamed])
            for path in [out, renamed] {
                let r = try Self.score([path])
                #expect(r.report == base.report, "\(path)")
                #expect(r.verdicts == base.verdicts, "\(path)")
            }
            #expect(try CaptureReader(path: out).compression?.rawValue == tool)
        }
    }

    @Test func pcapngAndCompressedPcapngGiveTheSameReport() throws {
        guard let plain = Self.capture, let editcap = Self.tool("editcap"), let zstd = Self.tool("zstd") else { return }
        let base = try Self.score([plain])
        let ng = TestEnvironment.temporaryPath("forms-mixed.pcapng")
        #expect(try TestEnvironment.run(editcap, ["-F", "pcapng", plain, ng]).status == 0)
        _ = try TestEnvironment.run("/bin/sh", ["-c", "'\(zstd)' -q -c < '\(ng)' > '\(ng).zst'"])
        for path in [ng, ng + ".zst"] {
            let r = try Self.score([path])
            #expect(r.report == base.report, "\(path)")
            #expect(r.verdicts == base.verdicts, "\(path)")
        }
    }

    /// A compressed file cut short, or damaged in the middle: scored up to the damage (the
    /// frames decompressed before it are not lost), one warning, exit 0.
    @Test(arguments: ["gzip", "zstd", "xz", "gzip-damaged"])
    func aCutOrDamagedCompressedCaptureScoresUpToTheDamage(_ form: String) throws {
        let tool = String(form.prefix { $0 != "-" })
        guard let plain = Self.capture, let t = Self.tool(tool), let bin = TestEnvironment.binary else { return }
        let path = TestEnvironment.temporaryPath("forms-cut.\(form)")
        let damage = form.hasSuffix("damaged")
            // 64 bytes of zeros written over the middle of the compressed data.
            ? "cat > '\(path)' && dd if=/dev/zero of='\(path)' bs=1 seek=150000 count=64 conv=notrunc 2>/dev/null"
            : "head -c 200000 > '\(path)'"
        _ = try TestEnvironment.run("/bin/sh", ["-c", "'\(t)' -c < '\(plain)' | { \(damage); }"])
        let r = try TestEnvironment.run(bin, ["score", path, "--format", "json"])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.hasPrefix("Warning: ") && r.err.split(separator: "\n").count == 1, "\(r.err)")
        // Damage inside deflate data decodes to garbage until a check fails: zlib's, or the pcap
        // record it produced (measured: a record length of 2.3 GB after 822 frames).
        #expect(form.hasSuffix("damaged") || r.err.contains("cut short"), "\(r.err)")
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        let frames = (json?["packets"] as? [String: Any])?["frames"] as? Int ?? 0
        #expect(frames > 500 && frames < 30000, "\(frames)")
    }

    /// `editcap -c` splits; the files renamed so that name order is not time order (a tcpdump -W
    /// ring after it wrapped), one of them compressed; given as files and as a directory.
    @Test func aSplitCaptureScoresAsOne() throws {
        guard let plain = Self.capture, let editcap = Self.tool("editcap"), let gzip = Self.tool("gzip") else { return }
        let base = try Self.score([plain])
        let dir = TestEnvironment.temporaryPath("forms-ring")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect(try TestEnvironment.run(editcap, ["-c", "7000", plain, dir + "/part.pcap"]).status == 0)
        let parts = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(parts.count == 5)
        // Ring names: the oldest part is cap3, the newest cap2.
        var ring: [String] = []
        for (i, p) in parts.enumerated() {
            let name = dir + "/cap\((i + 3) % parts.count)"
            try FileManager.default.moveItem(atPath: dir + "/" + p, toPath: name)
            ring.append(name)
        }
        _ = try TestEnvironment.run(gzip, [ring[1]])
        ring[1] += ".gz"
        // Not a capture: left out of the directory with a warning.
        try Data("checksums\n".utf8).write(to: URL(fileURLWithPath: dir + "/SHA256SUMS"))

        let asFiles = try Self.score(ring.reversed())
        let asDirectory = try Self.score([dir])
        for r in [asFiles, asDirectory] {
            #expect(r.report == base.report)
            #expect(Self.firstThreeColumns(r.verdicts) == Self.firstThreeColumns(base.verdicts))
            #expect(r.verdicts.first == "frame,verdict,reason,file")
            // The file column: each part's rows, in time order.
            let files = r.verdicts.dropFirst().map { $0.split(separator: ",").last.map(String.init) ?? "" }
            var order: [String] = []
            for f in files where order.last != f { order.append(f) }
            #expect(order == ring, "\(order)")
        }
        #expect(asDirectory.err.contains("SHA256SUMS") && asDirectory.err.contains("left out"), "\(asDirectory.err)")
    }

    @Test func standardInputAndStandardOutput() throws {
        guard let plain = Self.capture, let bin = TestEnvironment.binary, let xz = Self.tool("xz") else { return }
        let base = try TestEnvironment.run(bin, ["score", plain] + Self.protect + ["--format", "json"])
        // A compressed capture on standard input, the report on `--output -`.
        let viaStdin = try TestEnvironment.run("/bin/sh", ["-c", "'\(xz)' -c < '\(plain)' | '\(bin)' score - "
            + Self.protect.joined(separator: " ") + " --format json --output -"])
        #expect(viaStdin.status == 0, "\(viaStdin.err)")
        #expect(viaStdin.out.replacingOccurrences(of: "\"source\": \"-\"", with: "\"source\": \"\(plain)\"") == base.out)
        // The verdicts on standard output, the report in a file: no file named "-" appears.
        let report = TestEnvironment.temporaryPath("forms-report.txt")
        let dir = (report as NSString).deletingLastPathComponent
        let r = try TestEnvironment.run("/bin/sh", ["-c", "cd '\(dir)' && '\(bin)' score -r '\(plain)' --verdicts - --output '\(report)'"])
        #expect(r.status == 0 && r.out.hasPrefix("frame,verdict,reason\n1,"), "\(r.err)")
        let frames = (try JSONSerialization.jsonObject(with: Data(base.out.utf8)) as? [String: Any])
            .flatMap { $0["packets"] as? [String: Any] }?["frames"] as? Int
        #expect(r.out.split(separator: "\n").count == (frames ?? -1) + 1)
        #expect(!FileManager.default.fileExists(atPath: dir + "/-"))
        // Two outputs on standard output: refused before anything runs.
        let both = try TestEnvironment.run(bin, ["score", plain, "--verdicts", "-"])
        #expect(both.status == 2 && both.err.contains("standard output"), "\(both.err)")
        // -i is --interface: with a capture file it is refused the same way.
        let mixed = try TestEnvironment.run(bin, ["score", plain, "-i", "lo"])
        #expect(mixed.status == 2 && mixed.err.contains("not both"), "\(mixed.err)")
    }

    /// `lab gen --out -` writes the capture to standard output (its summary to standard error):
    /// piped into `score -`, the same report as from the file.
    @Test func labGenWritesToStandardOutput() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let file = TestEnvironment.temporaryPath("forms-gen.pcap")
        let args = "lab gen --scenario mixed --packets 3000 --seed 9"
        #expect(try TestEnvironment.run("/bin/sh", ["-c", "'\(bin)' \(args) --out '\(file)' >/dev/null"]).status == 0)
        let piped = try TestEnvironment.run("/bin/sh", ["-c", "'\(bin)' \(args) --out - 2>/dev/null | '\(bin)' score - --format json"])
        let direct = try TestEnvironment.run(bin, ["score", file, "--format", "json"])
        #expect(piped.status == 0 && direct.status == 0)
        #expect(piped.out.replacingOccurrences(of: "\"source\": \"-\"", with: "\"source\": \"\(file)\"") == direct.out)
        let both = try TestEnvironment.run(bin, ["lab", "gen", "--scenario", "mixed", "--out", "-", "--labels", "-"])
        #expect(both.status == 2, "\(both.err)")
    }

    /// `--filter` on a file scores what `tcpdump -r FILE -w OUT EXPR` would have kept; a bad
    /// expression exits 2 and leaves no output behind.
    @Test func aFilterOnFilesScoresWhatTcpdumpKeeps() throws {
        guard let plain = Self.capture, let tcpdump = Self.tool("tcpdump"), let bin = TestEnvironment.binary else { return }
        let expression = "tcp[tcpflags] & (tcp-syn|tcp-rst) != 0 and net 198.18.0.0/15"
        let kept = TestEnvironment.temporaryPath("forms-filtered.pcap")
        #expect(try TestEnvironment.run(tcpdump, ["--time-stamp-precision=nano", "-r", plain, "-w", kept, expression]).status == 0)
        let viaTcpdump = try Self.score([kept])
        let viaFilter = try Self.score([plain, "--filter", expression])
        #expect(viaFilter.report == viaTcpdump.report)
        #expect(viaFilter.verdicts == viaTcpdump.verdicts)
        #expect(viaFilter.verdicts.count > 100 && viaFilter.verdicts.count < 30001)

        let out = TestEnvironment.temporaryPath("forms-bad-filter.csv")
        unlink(out)
        let bad = try TestEnvironment.run(bin, ["score", plain, "--filter", "tcp port", "--verdicts", out])
        #expect(bad.status == 2 && bad.err.hasPrefix("Error: --filter 'tcp port': "), "\(bad.err)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: (out as NSString).deletingLastPathComponent)
            .filter { $0.contains("forms-bad-filter") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }
}
