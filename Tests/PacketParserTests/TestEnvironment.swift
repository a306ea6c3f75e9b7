import Foundation
import Testing

/// Where the shared captures live and whether a missing tool is a skip or a failure.
enum TestEnvironment {
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// `$REFLECTGUARD_SHARED`, else the `shared` directory beside the repository.
    static var sharedDirectory: URL {
        if let env = ProcessInfo.processInfo.environment["REFLECTGUARD_SHARED"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        // This file is <repo>/Tests/PacketParserTests/TestEnvironment.swift.
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared")
    }

    static var capturesDirectory: URL { sharedDirectory.appendingPathComponent("captures") }

    /// Records why a test could not run: a failure in CI, a printed skip otherwise.
    static func unavailable(_ why: String, sourceLocation: SourceLocation = #_sourceLocation) {
        if isCI {
            Issue.record("required in CI: \(why)", sourceLocation: sourceLocation)
        } else {
            print("SKIPPED: \(why)")
        }
    }

    /// The full path of an executable on PATH, nil when absent.
    static func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }
}
