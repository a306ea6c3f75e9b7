import Foundation
import Testing
import Lab
import PacketParser
import Scoring
import TestSupport

/// `score` on inputs that never end and outputs that name something already there: it reads
/// every input within bounds, and writes nothing over an input, through a symbolic link, or
/// into a file it leaves truncated.
@Suite struct ScoreSafetyTests {
    /// A fresh directory for one test's files.
    static func directory(_ name: String) throws -> String {
        let dir = TestEnvironment.temporaryPath("safety-\(name)")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A small capture: a handshake, a reflected SYN-ACK and a RST to a protected host.
    static func capture(in dir: String) throws -> String {
        let a = IPAddress("198.18.2.2")!, b = IPAddress("203.0.113.5")!
        // Written in the test's own directory: parameterised cases run in parallel, and one
        // shared file, copied by one case while another rewrote it, was once read empty.
        return try ReportTests.writeCapture("capture.pcap", frames: [
            ReportTests.frame(FrameSpec(source: a, destination: b, sourcePort: 40000, destinationPort: 443, flags: .syn,
                                        sequence: 1000)),
            ReportTests.frame(FrameSpec(source: b, destination: a, sourcePort: 443, destinationPort: 40000,
                                        flags: [.syn, .ack], sequence: 5000, acknowledgment: 1001)),
            ReportTests.frame(FrameSpec(source: b, destination: a, sourcePort: 443, destinationPort: 40001,
                                        flags: [.syn, .ack], sequence: 9, acknowledgment: 77)),
            ReportTests.frame(FrameSpec(source: b, destination: a, sourcePort: 443, destinationPort: 40002, flags: .rst,
                                        sequence: 9)),
        ], in: dir)
    }

    /// Runs a program (stdout and stderr to files: no pipe to fill) and, past `deadline`
    /// seconds, kills it and returns nil: a run that should end must not hang the suite.
    static func run(_ path: String, _ args: [String], deadline: Double) throws -> (status: Int32, out: String, err: String)? {
        let out = TestEnvironment.temporaryPath("safety-run-\(UUID().uuidString).out")
        let err = out.replacingOccurrences(of: ".out", with: ".err")
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: out); try? FileManager.default.removeItem(atPath: err) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = FileHandle(forWritingAtPath: out)
        p.standardError = FileHandle(forWritingAtPath: err)
        try p.run()
        let end = Date().addingTimeInterval(deadline)
        while p.isRunning && Date() < end { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            return nil
        }
        return (p.terminationStatus, try String(contentsOfFile: out, encoding: .utf8),
                try String(contentsOfFile: err, encoding: .utf8))
    }

    // MARK: labels

    @Test(arguments: ["/dev/zero", "/dev/urandom"])
    func labelsFromADeviceThatNeverEndsAreAnError(_ device: String) throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let capture = try Self.capture(in: Self.directory("labels-\(device.split(separator: "/").last!)"))
        // Before the bound the whole device was read into memory: killed at the deadline.
        let r = try #require(try Self.run(bin, ["score", capture, "--labels", device], deadline: 60),
                             "score --labels \(device) still running after 60 s")
        #expect(r.status == 1, "\(r.err.prefix(300))")
        #expect(r.err.hasPrefix("Error: \(device): line 1: "), "\(r.err.prefix(300))")
        #expect(r.err.split(separator: "\n").count == 1)
        #expect(r.out.isEmpty)
    }

    /// Valid rows from a FIFO whose writer never stops: refused after the most lines a labels file
    /// can have (about a gigabyte of rows, a few seconds), in memory that does not grow.
    @Test func labelsFromAnEndlessFIFOAreAnError() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("labels-fifo")
        let capture = try Self.capture(in: dir)
        let fifo = dir + "/labels.csv"
        #expect(mkfifo(fifo, 0o600) == 0)
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The header, then the same valid row forever (yes ends on SIGPIPE when the reader goes).
        writer.arguments = ["-c", "exec > \"$1\"; echo frame,label; exec yes 1,legit", "sh", fifo]
        try writer.run()
        defer {
            if writer.isRunning { kill(writer.processIdentifier, SIGKILL) }
            writer.waitUntilExit()
        }
        let r = try #require(try Self.run(bin, ["score", capture, "--labels", fifo], deadline: 180),
                             "score --labels FIFO still running after 180 s")
        #expect(r.status == 1, "\(r.err.prefix(300))")
        #expect(r.err.hasPrefix("Error: \(fifo): line \(LabelTable.Reader.maxLines + 1): more lines than a labels file has"),
                "\(r.err.prefix(300))")
    }

    /// Pieces of any size read as the whole text does: a row split anywhere, CR LF included.
    @Test func labelsReadInPiecesAreTheLabelsOfTheWhole() throws {
        let text = "frame,label\r\n1,legit\r\n2,attack-synack\n\n5,attack-rst\n2,legit\n7,attack-synack"
        let whole = try LabelTable(csv: text)
        for size in [1, 2, 3, 7, 64] {
            var reader = LabelTable.Reader()
            let bytes = Array(text.utf8)
            for start in stride(from: 0, to: bytes.count, by: size) {
                try bytes[start..<min(start + size, bytes.count)].withUnsafeBytes { try reader.read($0) }
            }
            let t = try reader.finish()
            #expect(t.names == whole.names)
            for f in 0...8 { #expect(t.label(ofFrame: f) == whole.label(ofFrame: f), "piece \(size), frame \(f)") }
        }
        #expect(whole.names == ["unlabelled", "legit", "attack-synack", "attack-rst"])
        #expect(whole.label(ofFrame: 2) == 1 && whole.label(ofFrame: 7) == 2 && whole.label(ofFrame: 6) == 0)
    }

    @Test func labelRowsOutsideTheFormatAreErrorsNamingTheLine() {
        let long = String(repeating: "x", count: LabelTable.Reader.maxLineBytes + 1)
        for (text, message) in [
            ("frame,label\n1,\n", "line 2: label '' is neither 'legit' nor 'attack-…'"),
            ("frame,label\n1,legit\n2,attack-\(long)\n", "line 3: longer than 256 bytes, expected 'frame,label'"),
            (long + "\n", "line 1: longer than 256 bytes, expected header 'frame,label'"),
            ("frame,label\n+3,legit\n9223372036854775808,legit\n", "line 3: expected 'frame,label', got '9223372036854775808,legit'"),
            ("\n \n\t\r\n", "empty file: expected header 'frame,label'"),
            ("\n\nframe,label\n", "line 1: expected header 'frame,label', got ''"),
            (String(repeating: "y", count: 100) + "\n", "line 1: expected header 'frame,label', got '\(String(repeating: "y", count: 64))…'"),
        ] {
            let e = #expect(throws: LabelError.self) { try LabelTable(csv: text) }
            #expect(e?.description == message, "\(text.prefix(40)): \(String(describing: e))")
        }
    }

    // MARK: outputs

    /// Every output flag, given the capture or the labels file under any spelling (the path
    /// itself, another path to it, a hard link, a symbolic link), is refused (exit 2) and the
    /// input keeps every byte.
    @Test(arguments: ["--output", "--verdicts", "--sessions"])
    func anOutputNamingAnInputIsRefusedAndTheInputKept(_ flag: String) throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("input\(flag)")
        let capture = try Self.capture(in: dir)
        let labels = dir + "/labels.csv"
        try "frame,label\n1,legit\n3,attack-synack\n".write(toFile: labels, atomically: false, encoding: .utf8)
        #expect(link(capture, dir + "/hard.pcap") == 0)
        #expect(symlink(capture, dir + "/soft.pcap") == 0)
        let captureBytes = try Data(contentsOf: URL(fileURLWithPath: capture))
        let labelBytes = try Data(contentsOf: URL(fileURLWithPath: labels))
        for output in [capture, dir + "/./capture.pcap", dir + "/hard.pcap", dir + "/soft.pcap", labels] {
            let r = try TestEnvironment.run(bin, ["score", capture, "--labels", labels, flag, output])
            #expect(r.status == 2, "\(flag) \(output): exit \(r.status) \(r.err)")
            #expect(r.err.hasPrefix("Error: \(flag) \(output) is "), "\(r.err)")
            #expect(r.err.contains("an output never overwrites an input"), "\(r.err)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: capture)) == captureBytes, "\(flag) \(output) changed the capture")
            #expect(try Data(contentsOf: URL(fileURLWithPath: labels)) == labelBytes, "\(flag) \(output) changed the labels")
        }
    }

    @Test func twoOutputsNamingOneFileAreRefused() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("two-outputs")
        let capture = try Self.capture(in: dir)
        let r = try TestEnvironment.run(bin, ["score", capture, "--verdicts", dir + "/out.csv", "--sessions", dir + "/./out.csv"])
        #expect(r.status == 2, "\(r.err)")
        #expect(r.err.hasPrefix("Error: --sessions \(dir)/./out.csv is the file --verdicts \(dir)/out.csv writes"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out.csv"))
        // Devices are not files two outputs could spoil: discarding both still works.
        let null = try TestEnvironment.run(bin, ["score", capture, "--verdicts", "/dev/null", "--sessions", "/dev/null",
                                                 "--output", "/dev/null"])
        #expect(null.status == 0, "\(null.err)")
        #expect(null.out.isEmpty)
    }

    /// A symbolic link at an output's path, live or dangling, is refused (exit 1) and what it
    /// points to is neither written nor created.
    @Test(arguments: ["--output", "--verdicts", "--sessions"])
    func anOutputThatIsASymbolicLinkIsRefused(_ flag: String) throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("symlink\(flag)")
        let capture = try Self.capture(in: dir)
        try "precious\n".write(toFile: dir + "/target", atomically: false, encoding: .utf8)
        #expect(symlink(dir + "/target", dir + "/live") == 0)
        #expect(symlink(dir + "/absent", dir + "/dangling") == 0)
        for output in [dir + "/live", dir + "/dangling"] {
            let r = try TestEnvironment.run(bin, ["score", capture, flag, output])
            #expect(r.status == 1, "\(output): exit \(r.status) \(r.err)")
            #expect(r.err == "Error: cannot write \(output): it is a symbolic link, and outputs never follow one "
                    + "(name the file it points to)\n", "\(r.err)")
        }
        #expect(try String(contentsOfFile: dir + "/target", encoding: .utf8) == "precious\n")
        #expect(!FileManager.default.fileExists(atPath: dir + "/absent"))
    }

    /// `lab gen` writes its capture and labels under the same rules: never through a symbolic
    /// link, created 0644 whatever the umask, and never one file for both.
    @Test func labGenOutputsNeverFollowALinkAndAreCreated0644() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("labgen")
        try "precious\n".write(toFile: dir + "/target", atomically: false, encoding: .utf8)
        #expect(symlink(dir + "/target", dir + "/live.pcap") == 0)
        let gen = ["lab", "gen", "--scenario", "legit", "--packets", "200"]
        let linked = try TestEnvironment.run(bin, gen + ["--out", dir + "/live.pcap"])
        #expect(linked.status == 1, "exit \(linked.status) \(linked.err)")
        #expect(linked.err.contains("symbolic link"), "\(linked.err)")
        let linkedLabels = try TestEnvironment.run(bin, gen + ["--out", dir + "/x.pcap", "--labels", dir + "/live.pcap"])
        #expect(linkedLabels.status == 1, "exit \(linkedLabels.status) \(linkedLabels.err)")
        #expect(try String(contentsOfFile: dir + "/target", encoding: .utf8) == "precious\n")

        let same = try TestEnvironment.run(bin, gen + ["--out", dir + "/one", "--labels", dir + "/./one"])
        #expect(same.status == 2, "exit \(same.status) \(same.err)")

        let r = try TestEnvironment.run("/bin/sh", ["-c", "umask 000; exec \"$@\"", "sh", bin] + gen
                                        + ["--out", dir + "/gen.pcap", "--labels", dir + "/gen.csv"])
        #expect(r.status == 0, "\(r.err)")
        for f in ["/gen.pcap", "/gen.csv"] {
            let mode = try FileManager.default.attributesOfItem(atPath: dir + f)[.posixPermissions] as? Int
            #expect(mode == 0o644, "\(f): \(String(mode ?? -1, radix: 8))")
        }
    }

    /// Created 0644 whatever the umask; a file replaced keeps a stricter mode it had.
    @Test func outputsAreCreated0644OrStricter() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("modes")
        let capture = try Self.capture(in: dir)
        let secret = dir + "/secret.csv"
        _ = FileManager.default.createFile(atPath: secret, contents: Data("old\n".utf8), attributes: [.posixPermissions: 0o600])
        // umask 0 in the child only: the test process's umask is every parallel test's.
        let r = try TestEnvironment.run("/bin/sh", ["-c", "umask 000; exec \"$@\"", "sh", bin, "score", capture,
                                                    "--output", dir + "/report.txt", "--verdicts", dir + "/v.csv",
                                                    "--sessions", secret])
        #expect(r.status == 0, "\(r.err)")
        func mode(_ path: String) throws -> Int {
            try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1
        }
        #expect(try mode(dir + "/report.txt") == 0o644)
        #expect(try mode(dir + "/v.csv") == 0o644)
        #expect(try mode(secret) == 0o600)
        #expect(try String(contentsOfFile: secret, encoding: .utf8).hasPrefix("client,client_port,"))
    }

    /// Outputs are opened before the capture is read, so a bad path fails at once; a run that
    /// then fails leaves an existing output as it was, and no file of its own behind.
    @Test func aFailedRunLeavesExistingOutputsAsTheyWere() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let dir = try Self.directory("failed-run")
        let garbage = dir + "/garbage.pcap"
        try "not a capture\n".write(toFile: garbage, atomically: false, encoding: .utf8)
        for name in ["report.txt", "v.csv", "s.csv"] {
            try "previous \(name)\n".write(toFile: dir + "/" + name, atomically: false, encoding: .utf8)
        }
        let r = try TestEnvironment.run(bin, ["score", garbage, "--output", dir + "/report.txt",
                                              "--verdicts", dir + "/v.csv", "--sessions", dir + "/s.csv"])
        #expect(r.status == 1, "\(r.err)")
        for name in ["report.txt", "v.csv", "s.csv"] {
            #expect(try String(contentsOfFile: dir + "/" + name, encoding: .utf8) == "previous \(name)\n", "\(name)")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(left == ["garbage.pcap", "report.txt", "s.csv", "v.csv"], "\(left)")

        // And a run that succeeds replaces them.
        let capture = try Self.capture(in: dir)
        let ok = try TestEnvironment.run(bin, ["score", capture, "--output", dir + "/report.txt", "--verdicts", dir + "/v.csv"])
        #expect(ok.status == 0, "\(ok.err)")
        #expect(try String(contentsOfFile: dir + "/v.csv", encoding: .utf8).hasPrefix("frame,verdict,reason\n1,"))
    }
}
