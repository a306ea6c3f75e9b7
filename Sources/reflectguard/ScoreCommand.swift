#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Agent
import Captures
import NftBackend
import PacketParser
import Rules
import Scoring
import SystemCalls
import VerdictEngine

/// `reflectguard score`: decide every frame of a capture (or of a live interface, observe only)
/// with packet timestamps, and report what would be dropped and why. Never changes the system.
enum ScoreCommand {
    static let spec = CommandSpec(
        path: "reflectguard score",
        overview: """
            Score captures or a live interface: what ReflectGuard would drop, and why.
            A --rules FILE is first checked with nft's dry run (nothing is applied; needs \
            CAP_NET_ADMIN, else skipped with a warning): a ruleset nft rejects exits 3.
            """,
        usage: ["<capture>... [options]", "--interface IF [--duration SECONDS] [options]"],
        arguments: [("<capture>...", "pcap or pcapng files, plain or gzip/zstd/xz-compressed, or a directory of them "
                        + "(- for standard input). Several are scored as one capture, in the order of their first "
                        + "frame's time.")],
        options: SharedOptions.policy + [
            OptionSpec(name: "-r", value: "FILE", help: "A capture file, as tcpdump's -r (same as naming it).", repeatable: true),
            OptionSpec(name: "--interface", value: "IF", help: "Observe a live interface instead of a file (Ctrl-C for the report)."),
            OptionSpec(name: "-i", value: "IF", help: "Same as --interface."),
            OptionSpec(name: "--duration", value: "SECONDS", help: "With --interface: stop and report after this long."),
            OptionSpec(name: "--filter", value: "EXPR",
                       help: "A BPF expression (tcpdump's syntax): only matching frames are scored, live or from files."),
            OptionSpec(name: "--format", value: "text|json|html", help: "Report format (default text)."),
            OptionSpec(name: "--output", value: "FILE", help: "Write the report to FILE instead of standard output (- for it)."),
            OptionSpec(name: "--verdicts", value: "FILE.csv",
                       help: "Write frame,verdict,reason for every frame (and file, with several inputs); - for standard output."),
            OptionSpec(name: "--labels", value: "FILE.csv", help: "Per-frame labels (frame,label): adds precision/recall."),
            OptionSpec(name: "--sessions", value: "FILE.csv",
                       help: "Write one row per TCP session with its end reason; - for standard output."),
            OptionSpec(name: "--threads", value: "1|2",
                       help: "For a file: 2 decides on one core and keeps the report on another (default when this process may use two CPUs); the report is the same."),
        ],
        positionals: 0...Int.max)

    enum Format: String { case text, json, html }

    static func main(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, spec)
        let captures = a.positionals + a.all("-r")
        if a.value("--interface") != nil && a.value("-i") != nil {
            throw CommandExit.usage(UsageError(message: "give --interface or -i, not both"), spec)
        }
        let interface = a.value("--interface") ?? a.value("-i")
        if !captures.isEmpty && interface != nil {
            throw CommandExit.usage(UsageError(message: "give capture files or --interface, not both"), spec)
        }
        if captures.isEmpty && interface == nil {
            throw CommandExit.usage(UsageError(message: "missing argument: <capture> (or --interface IF)"), spec)
        }
        if captures.filter({ $0 == "-" }).count > 1 {
            throw CommandExit.usage(UsageError(message: "standard input (-) can be read once"), spec)
        }
        guard let format = Format(rawValue: a.value("--format") ?? "text") else {
            throw CommandExit.usage(UsageError(message: "--format '\(a.value("--format")!)': expected text, json or html"), spec)
        }
        var duration: Double? = nil
        if let d = a.value("--duration") {
            guard interface != nil else { throw CommandExit.usage(UsageError(message: "--duration needs --interface"), spec) }
            guard let v = Double(d), v > 0, v.isFinite else {
                throw CommandExit.usage(UsageError(message: "--duration '\(d)': expected a positive number of seconds"), spec)
            }
            duration = v
        }
        var threads = FrameScoring.defaultThreads
        if let t = a.value("--threads") {
            guard let v = Int(t), v == 1 || v == 2 else { throw CommandExit.usage(UsageError(message: "--threads '\(t)': expected 1 or 2"), spec) }
            threads = v
        }
        try refuseTwoOutputsOnStandardOutput(a)
        guard let policy = try resolvePolicy(a) else { return ExitCode.rules.rawValue }

        // The files, in time order: opened (and a bad one reported) before anything is written.
        var members: [CaptureSet.Member] = []
        if !captures.isEmpty {
            do {
                let (found, skipped) = try CaptureSet.resolve(captures)
                for s in skipped { printError("Warning: \(s); left out") }
                members = found
            } catch {
                printError("Error: \(describe(error))")
                return ExitCode.failure.rawValue
            }
        }

        // The first file opened and the filter compiled for it before any output is created: a
        // bad expression exits 2 and leaves nothing behind.
        var first: CaptureReader? = nil
        var filter: PacketFilter? = nil
        if let path = members.first?.path {
            do { first = try CaptureReader(path: path) } catch {
                printError("Error: \(describe(error))")
                return ExitCode.failure.rawValue
            }
            if let expression = a.value("--filter") {
                do { filter = try PacketFilter(expression, link: first!.linkType) } catch {
                    throw CommandExit.usage(UsageError(message: describe(error)), spec)
                }
            }
        }

        var labels: LabelTable? = nil
        if let path = a.value("--labels") {
            guard let table = readLabels(path) else { return ExitCode.failure.rawValue }
            labels = table
        }

        try refuseOutputsOverwritingFiles(a, captures: members.map(\.path))
        let pipeline = ScoringPipeline(policy: policy, labels: labels)
        let fileColumn = members.count > 1 ? FileColumn(files: members.map(\.path)) : nil
        var verdicts: VerdictsCSV? = nil
        var sessions: SessionsCSV? = nil
        var output: BufferedFile? = nil
        do {
            // Opened before scoring, so a bad path fails in a moment, not after a long capture.
            if let path = a.value("--output") { output = try BufferedFile(path: path) }
            if let path = a.value("--verdicts") {
                let w = try VerdictsCSV(path: path, files: fileColumn)
                verdicts = w
                pipeline.verdictSink = { w.row(frame: $0, decision: $1) }
            }
            if let path = a.value("--sessions") {
                let w = try SessionsCSV(path: path)
                sessions = w
                pipeline.sessions.sink = { w.row($0) }
            }
        } catch {
            printError("Error: \(describe(error))")
            return ExitCode.failure.rawValue
        }

        // Files: the same engine seed every run, since a capture must always give the same
        // verdicts (docs/output.md) and the engine's tables evict by neighbourhood when full.
        // Live traffic: a random one, as `run` uses (the scoring pipeline's is random either way).
        let engine = interface == nil ? Engine(policy: policy, seed: 0) : Engine(policy: policy)
        let source: String
        var linkNames: [String]
        do {
            if interface == nil {
                source = captures.joined(separator: " ")
                linkNames = scoreFiles(members, first: first!, filter: filter, files: fileColumn, engine: engine,
                                       pipeline: pipeline, threads: threads)
            } else {
                if interface == "any" {
                    // Linux's "any" device sees a forwarded packet twice, in on one interface and out
                    // on another: every count doubles for it. Say so rather than de-duplicate, since
                    // a locally sent or received packet is seen once and cannot be told apart.
                    printError("Warning: --interface any captures a packet the host forwards twice (in on one interface, "
                        + "out on another): counts and rates double for forwarded traffic; name the outside interface "
                        + "to see each packet once")
                }
                let live = try LiveCapture(interface: interface!)
                if let expression = a.value("--filter") {
                    // Returned, not exited: the outputs opened above are removed on the way out.
                    do { try live.setFilter(expression) } catch {
                        printUsageError(UsageError(message: describe(error)), spec)
                        return ExitCode.usage.rawValue
                    }
                }
                source = interface!
                linkNames = [live.linkTypeName]
                try scoreLive(live, engine: engine, pipeline: pipeline, duration: duration)
            }
        } catch {
            printError("Error: \(describe(error))")
            return ExitCode.failure.rawValue
        }
        pipeline.finish()
        do {
            try verdicts?.close()
            try sessions?.close()
        } catch {
            printError("Error: \(describe(error))")
            return ExitCode.failure.rawValue
        }

        if linkNames.isEmpty { linkNames = ["NONE"] }
        var report = pipeline.report(source: source, linkType: linkNames[0])
        report.linkTypes = linkNames
        report.files = members.map(\.path)
        report.attacks = AttackRow.pair(engine.drainAttackEvents())
        report.attacksLost = engine.stats.attackEventsLost
        let text: String
        switch format {
        case .text: text = TextReport.render(report)
        case .json: text = JSONReport.render(report)
        case .html: text = HTMLReport.render(report)
        }
        if let out = output {
            do {
                out.write(text)
                try out.close()
            } catch {
                printError("Error: \(describe(error))")
                return ExitCode.failure.rawValue
            }
        } else {
            print(text, terminator: "")
            StandardStreams.flushOutput()
        }
        return ExitCode.success.rawValue
    }

    /// Exits 2 when two outputs would go to standard output (the report goes there unless
    /// `--output FILE`): their lines would interleave.
    static func refuseTwoOutputsOnStandardOutput(_ a: Arguments) throws(CommandExit) {
        var onStdout: [String] = []
        if a.value("--output") == nil || a.value("--output") == "-" { onStdout.append(a.value("--output") == nil ? "the report" : "--output -") }
        for flag in ["--verdicts", "--sessions"] where a.value(flag) == "-" { onStdout.append("\(flag) -") }
        if onStdout.count > 1 {
            throw CommandExit.usage(UsageError(message: "\(onStdout.joined(separator: " and ")) would all go to standard output; "
                + "give the others a file (e.g. --output report.txt)"), spec)
        }
    }

    /// Exits 2 when an output names an input (`score x.pcap --verdicts x.pcap` would replace the
    /// capture with its verdicts) or the file another output names (one would replace the other):
    /// the command line names one file twice, however it spells it.
    static func refuseOutputsOverwritingFiles(_ a: Arguments, captures: [String]) throws(CommandExit) {
        var inputs: [(String, FileIdentity)] = []
        for (what, path) in captures.map({ ("the capture", Optional($0)) })
            + [("--labels", a.value("--labels")), ("--rules", a.value("--rules"))] {
            if let path, path != "-", let id = FileIdentity(path: path) { inputs.append(("\(what) \(path)", id)) }
        }
        var outputs: [(String, FileIdentity)] = []
        for flag in ["--output", "--verdicts", "--sessions"] {
            guard let path = a.value(flag), path != "-", let id = FileIdentity(path: path) else { continue }
            let named = "\(flag) \(path)"
            if let input = inputs.first(where: { $0.1 == id }) {
                throw CommandExit.usage(UsageError(message: "\(named) is \(input.0): an output never overwrites an input"), spec)
            }
            if id.isFile, let other = outputs.first(where: { $0.1 == id }) {
                throw CommandExit.usage(UsageError(message: "\(named) is the file \(other.0) writes"), spec)
            }
            outputs.append((named, id))
        }
    }

    /// The policy from the rules file (default: embedded), `--protect`, `-D` and `--mode`; nil
    /// after printing a rules error (exit 3). A bad command-line value ends the command with exit 2,
    /// an unreadable rules file with exit 1.
    static func resolvePolicy(_ a: Arguments) throws(CommandExit) -> Policy? {
        let resolved: ResolvedRules
        do throws(RulesError) { resolved = try SharedOptions.resolve(a, defines: a.all("-D")) } catch {
            if error.fromCommandLine { throw CommandExit.usage(UsageError(message: error.description), spec) }
            printError("Error: \(error.description)")
            if error.isUnreadableFile { throw .code(.failure) }
            return nil
        }
        let file = resolved.file
        var policy = resolved.policy
        if let m = a.value("--mode") {
            guard let mode = Mode(rawValue: m) else {
                throw CommandExit.usage(UsageError(message: "--mode '\(m)': expected symmetric or ingress-only"), spec)
            }
            policy.mode = mode
        }
        // The embedded default is checked when it is built; a file given is checked here so a
        // ruleset that `run` could not load does not score as if it could.
        if !file.isEmbedded || resolved.config != nil, !nftAccepts(resolved) { return nil }
        if policy.stateSource == .conntrack {
            // A capture carries no conntrack table: scoring judges with the SYNs it holds.
            printError("Note: state = conntrack is ignored by score (a capture carries no conntrack state); scoring with state = local")
            policy.stateSource = .local
        }
        return policy
    }

    /// Whether nft accepts the rules, by libnftables' dry run (`nft -c`: the kernel checks the
    /// batch, nothing is committed, so `score` still changes nothing). False after printing nft's
    /// FILE:LINE:COL errors. The dry run needs CAP_NET_ADMIN: without it (or without a usable
    /// libnftables) the check is skipped with a warning, since scoring needs no privilege.
    static func nftAccepts(_ rules: ResolvedRules) -> Bool {
        // Asked first: libnftables itself prints "Operation not permitted (you must be root)" on
        // stderr when the kernel refuses the batch, which would make the warning two lines.
        guard RunCommand.hasNetAdmin() else {
            printError("Warning: rules not checked with nft (needs CAP_NET_ADMIN); scoring with them anyway")
            return true
        }
        do {
            let backend = try NftRuleset.probeBackend()
            try NftRuleset.check(rules, hook: .router, backend: backend)
            return true
        } catch {
            var m = error.message
            while m.hasSuffix("\n") { m.removeLast() }
            if error.isRulesError {
                printError(m)
                return false
            }
            let first = m.split(separator: "\n").first.map(String.init) ?? m
            printError("Warning: rules not checked with nft (\(first)); scoring with them anyway")
            return true
        }
    }

    /// Scores the files one after the other as one capture (see `CaptureFileSource`). Returns
    /// the link type names seen, first seen first.
    static func scoreFiles(_ members: [CaptureSet.Member], first: CaptureReader, filter: PacketFilter?, files: FileColumn?,
                           engine: Engine, pipeline: ScoringPipeline, threads: Int) -> [String] {
        var frames = CaptureFileSource(paths: members.map(\.path), first: first, filter: filter,
                                       warn: { printError("Warning: \($0)") },
                                       fileStarted: { files?.begin(file: $0, atFrame: $1) })
        do {
            try FrameScoring.run(engine: engine, pipeline: pipeline, threads: threads, source: &frames)
        } catch {
            // A capture cut short (a crashed tcpdump) still scores up to the cut, as tshark does.
            printError("Warning: \(describe(error)); reporting the \(pipeline.frames) frames before it")
        }
        return frames.linkTypeNames
    }

    /// Scores a live interface until Ctrl-C, SIGTERM or `duration`, with a status line on a
    /// terminal. One thread: the status line reads the pipeline between frames.
    static func scoreLive(_ live: LiveCapture, engine: Engine, pipeline: ScoringPipeline, duration: Double?) throws {
        stopRequested = 0
        signal(SIGINT) { _ in stopRequested = 1 }
        signal(SIGTERM) { _ in stopRequested = 1 }
        defer { signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL) }
        let tty = isatty(STDERR_FILENO) == 1
        var frames = LiveFrameSource(live, duration: duration, shouldStop: { stopRequested != 0 }, tick: {
            guard tty else { return }
            var line = pipeline.statusLine
            if let s = live.statistics(), s.dropped > 0 { line += "  kernel dropped \(s.dropped)" }
            StandardStreams.writeError("\r\u{1b}[K" + line)
        })
        try FrameScoring.run(engine: engine, pipeline: pipeline, threads: 1, source: &frames)
        if tty { StandardStreams.writeError("\r\u{1b}[K") }
    }

    /// The labels file, read in 64 KiB pieces (memory and work stay bounded whatever the path
    /// names: see `LabelTable.Reader`), or nil after printing one line that says why.
    static func readLabels(_ path: String) -> LabelTable? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            printError("Error: cannot read \(path): \(String(cString: strerror(errno)))")
            return nil
        }
        defer { close(fd) }
        var reader = LabelTable.Reader()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        do {
            while true {
                let got = chunk.withUnsafeMutableBytes { c in
                    Result { () throws(SystemCallError) in try syscallValue("read") { read(fd, c.baseAddress, c.count) } }
                }
                guard case .success(let n) = got else {
                    if case .failure(let error) = got { printError("Error: cannot read \(path): \(error.reason)") }
                    return nil
                }
                if n == 0 { return try reader.finish() }
                try chunk.withUnsafeBytes { try reader.read(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            }
        } catch {
            printError("Error: \(path): \(describe(error))")
            return nil
        }
    }

    static func describe(_ error: Error) -> String {
        String(describing: error)
    }
}

/// Set by SIGINT/SIGTERM during live scoring; read by the capture loop between reads.
nonisolated(unsafe) var stopRequested: sig_atomic_t = 0
