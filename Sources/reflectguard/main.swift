#if canImport(Glibc)
import Glibc
#endif

/// The executable is wiring and argument parsing only: each subcommand lives in its own file and
/// calls into the library targets.
let version = "0.1.0"

let topSpec = CommandSpec(
    path: "reflectguard",
    overview: "Inline NFQUEUE mitigation of spoofed SYN-ACK reflection and RST floods.",
    usage: ["<subcommand> [options]", "--help | --version"],
    options: [OptionSpec(name: "--version", value: nil, help: "Show the version.")],
    subcommands: [
        ("run", "Run inline on NFQUEUE (or --dry-run)."),
        ("score", "Score a capture or live interface: what would be dropped, and why."),
        ("nft", "Generate, check, apply or remove the nftables rules."),
        ("lab", "Generate labelled scenario captures."),
        ("flowspec", "Show the BGP Flowspec routes announced upstream now."),
        ("reload", "Make the running agent check and apply its configuration; exit non-zero if refused."),
        ("stop", "Make the running agent remove its rules and exit."),
    ])

let commands: [String: ([String]) throws(CommandExit) -> Int32] = [
    "run": RunCommand.main,
    "score": ScoreCommand.main,
    "nft": NftCommand.main,
    "lab": LabCommand.main,
    "flowspec": FlowspecCommand.main,
    "reload": ControlCommand.reload,
    "stop": ControlCommand.stop,
]

/// The one place the process's exit code is decided: commands return it or end early with a
/// `CommandExit` (a usage error, help), and nothing below exits by itself.
@MainActor func main(_ argv: [String]) -> Int32 {
    do throws(CommandExit) {
        guard let first = argv.first else { throw .usage("missing subcommand", topSpec) }
        if first == "--version" {
            print("reflectguard \(version)")
            return ExitCode.success.rawValue
        }
        if first == "-h" || first == "--help" || first == "help" { throw .help(topSpec) }
        guard let command = commands[first] else { throw .usage("unknown subcommand '\(first)'", topSpec) }
        return try command(Array(argv.dropFirst()))
    } catch {
        return error.report()
    }
}

exit(main(Array(CommandLine.arguments.dropFirst())))
