import Agent
#if canImport(Glibc)
import Glibc
#endif

/// A hand-written command line in the manner of swift-argument-parser: each command declares its
/// options in a table, help goes to stdout with exit 0, usage errors go to stderr as
/// `Error: …` / `Usage: …` / `See '… --help' …` with exit 2 (docs/output.md).
struct OptionSpec {
    /// Long name with dashes (`--rules`), or a short one (`-D`).
    let name: String
    /// Placeholder for the value in help (`FILE`); nil for a flag that takes no value.
    let value: String?
    let help: String
    var repeatable = false
}

struct CommandSpec {
    /// Full command path, e.g. `reflectguard score`.
    let path: String
    let overview: String
    let usage: [String]
    var arguments: [(String, String)] = []
    var options: [OptionSpec] = []
    var subcommands: [(String, String)] = []
    /// How many positional arguments are allowed.
    var positionals: ClosedRange<Int> = 0...0
    /// What a positional is called in errors when `arguments` lists alternatives for one slot
    /// (`nft generate|check|…` says "missing action (generate, check, apply or remove)").
    var argumentKind = "argument"

    /// `path usage`, without a trailing space when the usage line is empty.
    func usageLine(_ usage: String) -> String { usage.isEmpty ? path : "\(path) \(usage)" }
}

struct UsageError: Error {
    let message: String
}

/// Parsed options: values by long name, flags present, positionals in order.
struct Arguments {
    private(set) var values: [String: [String]] = [:]
    private(set) var flags: Set<String> = []
    private(set) var positionals: [String] = []

    func value(_ name: String) -> String? { values[name]?.last }
    func all(_ name: String) -> [String] { values[name] ?? [] }
    func flag(_ name: String) -> Bool { flags.contains(name) }

    /// Parses `args` (without the command words) against `spec`. `--name=value` and
    /// `--name value` both work; `-DNAME=VALUE` and `-D NAME=VALUE` both work.
    static func parse(_ args: [String], spec: CommandSpec) throws(UsageError) -> Arguments {
        var out = Arguments()
        var i = 0
        var onlyPositionals = false
        while i < args.count {
            let arg = args[i]
            i += 1
            if onlyPositionals || !arg.hasPrefix("-") || arg == "-" {
                out.positionals.append(arg)
                continue
            }
            if arg == "--" { onlyPositionals = true; continue }
            var name = arg
            var inline: String? = nil
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                name = String(arg[..<eq])
                inline = String(arg[arg.index(after: eq)...])
            } else if !arg.hasPrefix("--"), arg.count > 2 {
                name = String(arg.prefix(2))
                inline = String(arg.dropFirst(2))
            }
            guard let opt = spec.options.first(where: { $0.name == name }) else {
                throw UsageError(message: "unknown option '\(name)' for '\(spec.path)'")
            }
            if opt.value == nil {
                guard inline == nil else { throw UsageError(message: "option '\(name)' takes no value") }
                out.flags.insert(name)
                continue
            }
            let v: String
            if let inline { v = inline } else {
                guard i < args.count else {
                    throw UsageError(message: "option '\(name)' needs a value (\(opt.value!))")
                }
                v = args[i]
                i += 1
            }
            if !opt.repeatable, out.values[name] != nil {
                throw UsageError(message: "option '\(name)' given twice")
            }
            out.values[name, default: []].append(v)
        }
        guard spec.positionals.contains(out.positionals.count) else {
            if out.positionals.count > spec.positionals.upperBound {
                let extra = out.positionals[spec.positionals.upperBound]
                throw UsageError(message: "unexpected argument '\(extra)'")
            }
            throw UsageError(message: spec.missingArgumentMessage(given: out.positionals.count))
        }
        return out
    }
}

extension CommandSpec {
    /// More argument rows than positional slots means the rows are alternatives for one slot.
    func missingArgumentMessage(given: Int) -> String {
        if arguments.count > positionals.upperBound {
            let names = arguments.map(\.0)
            let list = names.count > 1
                ? names.dropLast().joined(separator: ", ") + " or " + names.last!
                : names.joined()
            return "missing \(argumentKind) (\(list))"
        }
        if given < arguments.count { return "missing \(argumentKind): \(arguments[given].0)" }
        return "missing \(argumentKind)"
    }

    var helpText: String {
        var s = "OVERVIEW: \(overview)\n\nUSAGE: "
        s += usage.map(usageLine).joined(separator: "\n       ") + "\n"
        if !arguments.isEmpty {
            s += "\nARGUMENTS:\n"
            for (a, h) in arguments { s += Self.row(a, h) }
        }
        // Every command takes -h/--help, so OPTIONS is never empty.
        s += "\nOPTIONS:\n"
        for o in options {
            let left = o.value.map { "\(o.name) \($0)" } ?? o.name
            s += Self.row(left, o.help + (o.repeatable ? " (repeatable)" : ""))
        }
        s += Self.row("-h, --help", "Show help information.")
        if !subcommands.isEmpty {
            s += "\nSUBCOMMANDS:\n"
            for (c, h) in subcommands { s += Self.row(c, h) }
            s += "\n  See '\(path) <subcommand> --help' for detailed help.\n"
        }
        return s
    }

    private static func row(_ left: String, _ help: String) -> String {
        let pad = 26
        if left.count + 2 < pad {
            return "  " + left + String(repeating: " ", count: pad - left.count - 2) + help + "\n"
        }
        return "  " + left + "\n" + String(repeating: " ", count: pad) + help + "\n"
    }
}

/// The exit codes of docs/output.md.
enum ExitCode: Int32 {
    case success = 0
    case failure = 1
    case usage = 2
    case rules = 3
}

func printError(_ line: String) {
    // Under journald each line carries its priority (`<3>`, warnings `<4>`).
    let lower = line.lowercased()
    var line = Logger.plainLine(line, warning: lower.hasPrefix("warning") || lower.hasPrefix("note"))
    if !line.hasSuffix("\n") { line += "\n" }
    StandardStreams.writeError(line)
}

/// How a command ends early. Thrown up to `main.swift`, the one place that prints it and exits:
/// no helper exits the process itself.
enum CommandExit: Error {
    /// A usage error (exit 2): printed the way swift-argument-parser does.
    case usage(UsageError, CommandSpec)
    /// `-h`/`--help`: the help on stdout, exit 0.
    case help(CommandSpec)
    /// Whatever had to be said is said already: just this exit code.
    case code(ExitCode)

    /// A usage error of `spec` with this message.
    static func usage(_ message: String, _ spec: CommandSpec) -> CommandExit {
        .usage(UsageError(message: message), spec)
    }

    /// Prints what is still to be said and returns the process exit code.
    func report() -> Int32 {
        switch self {
        case .usage(let error, let spec):
            printUsageError(error, spec)
            return ExitCode.usage.rawValue
        case .help(let spec):
            print(spec.helpText, terminator: "")
            return ExitCode.success.rawValue
        case .code(let code):
            return code.rawValue
        }
    }
}

/// The three lines of a usage error.
func printUsageError(_ error: UsageError, _ spec: CommandSpec) {
    printError("Error: \(error.message)")
    printError("Usage: \(spec.usageLine(spec.usage.first ?? ""))")
    printError("  See '\(spec.path) --help' for more information.")
}

/// Parses `args` against `spec`; `-h`/`--help` and usage errors end the command (`CommandExit`).
func parse(_ args: [String], _ spec: CommandSpec) throws(CommandExit) -> Arguments {
    if args.contains("-h") || args.contains("--help") { throw .help(spec) }
    do { return try Arguments.parse(args, spec: spec) } catch { throw .usage(error, spec) }
}
