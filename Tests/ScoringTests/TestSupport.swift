import Foundation
import PacketParser
import Scoring
import Testing
import VerdictEngine
import Captures

/// Where the shared captures and the binary live, and whether a missing one is a skip or a failure.
enum TestEnvironment {
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// This file is <package>/Tests/ScoringTests/TestSupport.swift.
    static var packageDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// `$REFLECTGUARD_SHARED`, else the `shared` directory beside the repository.
    static var capturesDirectory: URL {
        if let env = ProcessInfo.processInfo.environment["REFLECTGUARD_SHARED"], !env.isEmpty {
            return URL(fileURLWithPath: env).appendingPathComponent("captures")
        }
        return packageDirectory.deletingLastPathComponent().appendingPathComponent("shared/captures")
    }

    static func capture(_ name: String) -> String? {
        let p = capturesDirectory.appendingPathComponent(name).path
        return FileManager.default.isReadableFile(atPath: p) ? p : nil
    }

    /// `$REFLECTGUARD_BIN`, else `<package>/.build/debug/reflectguard`.
    static var binary: String? {
        let p = ProcessInfo.processInfo.environment["REFLECTGUARD_BIN"]
            ?? packageDirectory.appendingPathComponent(".build/debug/reflectguard").path
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }

    /// Records why a test could not run: a failure in CI, a printed skip otherwise.
    static func unavailable(_ why: String, sourceLocation: SourceLocation = #_sourceLocation) {
        if isCI { Issue.record("required in CI: \(why)", sourceLocation: sourceLocation) }
        else { print("SKIPPED: \(why)") }
    }

    static func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs a program, returning exit status, stdout and stderr.
    static func run(_ path: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read before waiting: a full pipe would block the child.
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    static func temporaryPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rg-scoring-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }
}

/// A decoded TCP packet without bytes, for session-logic tests.
func tcp(_ src: String, _ sport: UInt16, _ dst: String, _ dport: UInt16, _ flags: TCPFlags,
         payload: UInt16 = 0) -> ParsedPacket {
    var p = ParsedPacket()
    p.network = src.contains(":") ? .ipv6 : .ipv4
    p.hasTCP = true
    p.ipProtocol = 6
    p.source = IPAddress(src)!
    p.destination = IPAddress(dst)!
    p.sourcePort = sport
    p.destinationPort = dport
    p.flags = flags
    p.payloadLength = payload
    return p
}

let second: Nanoseconds = 1_000_000_000

/// Scores a capture in-process with one fixed decision per frame and returns the pipeline and
/// every session record, in the order sessions closed.
func scoreCapture(_ path: String, policy: Policy = Policy()) throws -> (ScoringPipeline, [SessionRecord]) {
    let reader = try CaptureReader(path: path)
    let pipeline = ScoringPipeline(policy: policy)
    var records: [SessionRecord] = []
    pipeline.sessions.sink = { records.append($0) }
    let engine = Engine(policy: policy, seed: 0)
    var packet = ParsedPacket()
    while let f = try reader.next() {
        PacketParser.parse(f.bytes, link: reader.linkType, into: &packet)
        pipeline.observe(packet, at: f.timestamp, decision: engine.decideObserved(packet, at: f.timestamp))
    }
    pipeline.finish()
    return (pipeline, records)
}
