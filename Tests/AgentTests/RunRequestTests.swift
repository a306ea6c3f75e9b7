import Testing
import Synchronization
import Glibc
@testable import Agent

/// `Agent.run(_:logger:)`, the lifecycle `reflectguard run` hands its parsed command line to: what
/// it refuses before touching anything, and with which of the documented exit codes. None of
/// these reach the capability check, so they run without root and change nothing (a request that
/// resolved would start an agent: every case here must fail before).
@Suite struct RunRequestTests {
    static func request(protect: [String] = ["198.18.0.0/24"], defines: [String] = [], rules: String? = nil) -> RunRequest {
        var r = RunRequest()
        r.protect = protect
        r.defines = defines
        r.rulesPath = rules
        r.configPath = "none"
        return r
    }

    static func failure(_ r: RunRequest) -> RunFailure? {
        do throws(RunFailure) {
            _ = try Agent.run(r, logger: Logger(level: .error))
            return nil
        } catch {
            return error
        }
    }

    @Test func noProtectedNetworkIsAUsageError() {
        #expect(Self.failure(Self.request(protect: [])) == .usage(
            "no protected network: give --protect CIDR or define protected_v4/protected_v6 in the rules"))
    }

    @Test func aBadValueFromTheCommandLineIsAUsageError() {
        guard case .usage(let message)? = Self.failure(Self.request(protect: ["198.18.0.0/33"])) else {
            Issue.record("a malformed --protect was not a usage error")
            return
        }
        #expect(message.hasPrefix("--protect:"), "\(message)")
    }

    @Test func anUnreadableRulesFileIsARuntimeFailure() {
        guard case .startFailed(let message, let code)? = Self.failure(Self.request(rules: "/nonexistent/rg15x.nft")) else {
            Issue.record("an unreadable rules file did not fail the start")
            return
        }
        #expect(code == 1)
        #expect(message.contains("/nonexistent/rg15x.nft"), "\(message)")
    }
}

/// The one reader of /proc and /sys files.
@Suite struct ProcFilesTests {
    @Test func readsNumbersLinesAndDirectories() throws {
        let last = try #require(ProcFiles.number(in: "/proc/sys/kernel/cap_last_cap"))
        #expect(last > 30 && last < 64)
        #expect(try #require(ProcFiles.entryCount("/proc/self/task")) >= 1)
        #expect(ProcFiles.line(in: "/proc/self/status", after: "Name:") != nil)
        #expect(ProcFiles.number(in: "/proc/meminfo", after: "MemTotal:").map { $0 > 0 } == true)
        #expect(ProcFiles.read("/nonexistent/rg15x") == nil)
        #expect(ProcFiles.number(in: "/proc/self/status", after: "NoSuchField:") == nil)
    }
}

/// The serial-queue state of the enforcement, the escalation, the watchdog and the XDP path.
@Suite struct SerialStateTests {
    /// `stop` returns only after everything enqueued before it ran, and its last step ran after
    /// them; a timer stopped ticks no more.
    @Test func stopWaitsForWhatWasEnqueuedAndEndsTheTimer() {
        let s = SerialState(label: "rg15x.test", [Int]())
        for i in 0..<1000 { s.async { $0.append(i) } }
        let ticks = Atomic<Int>(0)
        s.every(0.001, after: 0) { _ in ticks.add(1, ordering: .relaxed) }
        s.stop { $0.append(-1) }
        let seen = s.sync { $0 }
        #expect(Array(seen.prefix(1000)) == Array(0..<1000))
        #expect(seen.last == -1)
        let after = ticks.load(ordering: .relaxed)
        usleep(50_000)
        #expect(ticks.load(ordering: .relaxed) == after)
    }
}
