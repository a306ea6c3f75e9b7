#if canImport(Glibc)
import Glibc
#endif
import Lab
import PacketParser
import Scoring

/// `reflectguard lab`: labelled scenario captures for scoring, tests, demos and benchmarks.
///
/// Scenarios use the lab address plan and are meant to be scored with
/// `--protect 198.18.2.0/24 --protect 2001:db8:2::/64`.
enum LabCommand {
    static let spec = CommandSpec(
        path: "reflectguard lab",
        overview: "Generate labelled scenario captures (score them with \(LabAddresses.protectArguments.joined(separator: " "))).",
        usage: ["gen --scenario NAME --out FILE.pcap [--labels FILE.csv] [--seed N] [--packets N]",
                "list"],
        subcommands: [
            ("gen", "Write a scenario's pcap and its frame,label CSV."),
            ("list", "List the scenarios."),
        ],
        positionals: 0...1)

    static let genSpec = CommandSpec(
        path: "reflectguard lab gen",
        overview: """
            Write a scenario as an Ethernet pcap (nanosecond timestamps), deterministic per seed, \
            with a frame,label CSV (labels: legit, attack-synack, attack-rst, attack-blind-reset, \
            attack-backscatter). Score it with:
              reflectguard score FILE.pcap --labels FILE.csv \(LabAddresses.protectArguments.joined(separator: " "))

            SCENARIOS:
            \(scenarioList(indent: "  "))
            """,
        usage: ["--scenario NAME --out FILE.pcap [--labels FILE.csv] [--seed N] [--packets N] [--link ethernet|raw] [--snaplen N]",
                "--list"],
        options: [
            OptionSpec(name: "--scenario", value: "NAME", help: "Scenario to generate (see --list)."),
            OptionSpec(name: "--out", value: "FILE.pcap", help: "Capture to write."),
            OptionSpec(name: "--labels", value: "FILE.csv", help: "Per-frame labels to write (header frame,label)."),
            OptionSpec(name: "--seed", value: "N", help: "Seed, an unsigned 64-bit integer (default 1)."),
            OptionSpec(name: "--packets", value: "N",
                       help: "Approximate frame count of the full scenario (default 20000); -ingress variants write its inbound part."),
            OptionSpec(name: "--link", value: "ethernet|raw",
                       help: "Ethernet frames (default) or raw IP packets, as NFQUEUE delivers them."),
            OptionSpec(name: "--snaplen", value: "N",
                       help: "Cut frames to N bytes as a capture's snap length would (default 262144; 128 keeps all headers)."),
            OptionSpec(name: "--list", value: nil, help: "List the scenarios and exit."),
            OptionSpec(name: "--quiet", value: nil, help: "Print nothing on success."),
        ])

    static func scenarioList(indent: String) -> String {
        let width = Scenario.all.map(\.name.count).max() ?? 0
        return Scenario.all.map { s in
            indent + s.name + String(repeating: " ", count: width - s.name.count + 2) + s.summary
        }.joined(separator: "\n")
    }

    static func main(_ args: [String]) throws(CommandExit) -> Int32 {
        switch args.first {
        case "gen": return try gen(Array(args.dropFirst()))
        case "list":
            _ = try parse(Array(args.dropFirst()), CommandSpec(path: "reflectguard lab list",
                                                                 overview: "List the scenarios.", usage: [""]))
            print(scenarioList(indent: ""))
            return ExitCode.success.rawValue
        default:
            let parsed = try parse(args, spec)
            if let sub = parsed.positionals.first {
                throw CommandExit.usage(UsageError(message: "unknown subcommand '\(sub)'"), spec)
            }
            throw CommandExit.usage(UsageError(message: "missing subcommand (gen or list)"), spec)
        }
    }

    static func gen(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, genSpec)
        if a.flag("--list") {
            print(scenarioList(indent: ""))
            return ExitCode.success.rawValue
        }
        guard let name = a.value("--scenario") else {
            throw CommandExit.usage(UsageError(message: "missing --scenario NAME (one of: \(Scenario.all.map(\.name).joined(separator: ", ")))"), genSpec)
        }
        guard let scenario = Scenario(name: name) else {
            throw CommandExit.usage(UsageError(message: "unknown scenario '\(name)' (one of: \(Scenario.all.map(\.name).joined(separator: ", ")))"), genSpec)
        }
        guard let out = a.value("--out") else { throw CommandExit.usage(UsageError(message: "missing --out FILE.pcap"), genSpec) }
        // The labels would truncate the capture being written (or the other way round).
        if out == "-" && a.value("--labels") == "-" {
            throw CommandExit.usage(UsageError(message: "--out - and --labels - would both go to standard output"), genSpec)
        }
        if let labels = a.value("--labels"), labels != "-", out != "-", let l = FileIdentity(path: labels), l.isFile,
           l == FileIdentity(path: out) {
            throw CommandExit.usage(UsageError(message: "--labels \(labels) names the same file as --out \(out)"), genSpec)
        }
        var seed: UInt64 = 1
        if let s = a.value("--seed") {
            guard let v = UInt64(s) else {
                throw CommandExit.usage(UsageError(message: "invalid --seed '\(s)': expected an unsigned 64-bit integer"), genSpec)
            }
            seed = v
        }
        var packets = 20_000
        if let s = a.value("--packets") {
            guard let v = Int(s), v > 0, v <= 1_000_000_000 else {
                throw CommandExit.usage(UsageError(message: "invalid --packets '\(s)': expected an integer from 1 to 1000000000"), genSpec)
            }
            packets = v
        }
        var snapLength: UInt32 = 262_144
        if let s = a.value("--snaplen") {
            guard let v = UInt32(s), v >= 64, v <= 262_144 else {
                throw CommandExit.usage(UsageError(message: "invalid --snaplen '\(s)': expected an integer from 64 to 262144"), genSpec)
            }
            snapLength = v
        }
        var link = LinkType.ethernet
        switch a.value("--link") {
        case nil, "ethernet": break
        case "raw": link = .raw
        case let other?:
            throw CommandExit.usage(UsageError(message: "invalid --link '\(other)': expected ethernet or raw"), genSpec)
        }
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        let stats: ScenarioStats
        do {
            stats = try ScenarioFiles.write(scenario, seed: seed, packets: packets, link: link,
                                            snapLength: snapLength, pcap: out, labels: a.value("--labels"))
        } catch {
            printError("Error: \(error)")
            return ExitCode.failure.rawValue
        }
        clock_gettime(CLOCK_MONOTONIC, &t1)
        if !a.flag("--quiet") {
            // With a file on standard output, the summary goes to standard error.
            let print = { (line: String) in
                if out == "-" || a.value("--labels") == "-" { printError(line) } else { Swift.print(line) }
            }
            let seconds = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) / 1e9
            let labels = FrameLabel.allCases.compactMap { l in stats.perLabel[l].map { "\(l.token) \($0)" } }
            let span = Double(stats.lastTimestamp - stats.firstTimestamp) / 1e9
            print("\(scenario.name) seed \(seed): \(stats.frames) frames over \(Int(span.rounded())) s "
                  + "(\(labels.joined(separator: ", "))) -> \(out)"
                  + " in \(Int((seconds * 1000).rounded())) ms, \(Int(Double(stats.frames) / max(seconds, 1e-9))) frames/s")
            print("score with: \(LabAddresses.protectArguments.joined(separator: " "))")
        }
        return ExitCode.success.rawValue
    }
}
