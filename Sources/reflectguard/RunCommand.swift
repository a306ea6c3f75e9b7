/// `reflectguard run`: placeholder until its issue lands.
enum RunCommand {
    static let spec = CommandSpec(path: "reflectguard run", overview: "(not yet)", usage: ["[options]"])
    static func main(_ args: [String]) -> Int32 {
        _ = parseOrExit(args, spec)
        printError("Error: 'reflectguard run' is not implemented yet")
        return ExitCode.failure.rawValue
    }
}
