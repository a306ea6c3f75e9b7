import Foundation
import Testing

/// What the test targets share about where they run: the package and shared directories, the
/// built binary, tools on PATH, running programs, temporary files, and whether something missing
/// is a skip (locally) or a failure (in CI).
public enum TestEnvironment {
    /// True in CI (`CI=true`), where a missing capture, tool or binary fails the test.
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// The package's root directory. This file is `<package>/Tests/TestSupport/TestEnvironment.swift`.
    public static var packageDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// `$REFLECTGUARD_SHARED` when set and not empty, else the `shared` directory beside the package.
    public static var sharedDirectory: URL {
        if let env = ProcessInfo.processInfo.environment["REFLECTGUARD_SHARED"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        return packageDirectory.deletingLastPathComponent().appendingPathComponent("shared")
    }

    /// The shared captures: `captures` in `sharedDirectory`.
    public static var capturesDirectory: URL { sharedDirectory.appendingPathComponent("captures") }

    /// The path of the shared capture `name`, nil when it is not there or not readable.
    public static func capture(_ name: String) -> String? {
        let path = capturesDirectory.appendingPathComponent(name).path
        return FileManager.default.isReadableFile(atPath: path) ? path : nil
    }

    /// The `reflectguard` binary, nil when there is none: `$REFLECTGUARD_BIN` when set and not
    /// empty (nil if it is not executable), else `reflectguard` beside the test bundle (the same
    /// build directory, up to four directories above it), else `<package>/.build/debug/reflectguard`.
    public static var binary: String? {
        let fm = FileManager.default
        if let bin = ProcessInfo.processInfo.environment["REFLECTGUARD_BIN"], !bin.isEmpty {
            return fm.isExecutableFile(atPath: bin) ? bin : nil
        }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("reflectguard").path
            if fm.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        let debug = packageDirectory.appendingPathComponent(".build/debug/reflectguard").path
        return fm.isExecutableFile(atPath: debug) ? debug : nil
    }

    /// Records why a test could not run: an issue ("required in CI: …") in CI, a printed
    /// "SKIPPED: …" otherwise. Tests return right after calling it.
    public static func unavailable(_ why: String, sourceLocation: SourceLocation = #_sourceLocation) {
        if isCI {
            Issue.record("required in CI: \(why)", sourceLocation: sourceLocation)
        } else {
            print("SKIPPED: \(why)")
        }
    }

    /// The full path of the executable `tool`, looked up on PATH and then in /usr/sbin, /sbin,
    /// /usr/bin and /bin; nil when it is in none of them.
    public static func which(_ tool: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs the program at `path` with `args` (no shell) to completion and returns its exit
    /// status, stdout and stderr.
    @discardableResult
    public static func run(_ path: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
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

    /// A fresh path for a temporary file `name`: in a new directory of its own (`mkdtemp`) under
    /// this process's directory (`rg-tests-<pid>`) and this test target's (from `fileID`). Tests,
    /// and the cases of a parameterised test, run in parallel: two that named the same file once
    /// met in it, one reading the capture while the other rewrote it. A directory per call also
    /// keeps a leftover of an earlier process with the same pid out of the way.
    public static func temporaryPath(_ name: String, fileID: String = #fileID) -> String {
        let module = fileID.split(separator: "/").first.map(String.init) ?? "tests"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rg-tests-\(getpid())")
            .appendingPathComponent(module)
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var template = Array((dir.path + "/XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        // Without a directory of its own a test would share files again: better no test run at all.
        precondition(made, "mkdtemp in \(dir.path): \(String(cString: strerror(errno)))")
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } + "/" + name
    }
}
