/// `reflectguard score`: placeholder until its issue lands.
enum ScoreCommand {
    static let spec = CommandSpec(path: "reflectguard score", overview: "(not yet)", usage: ["[options]"])
    static func main(_ args: [String]) -> Int32 {
        _ = parseOrExit(args, spec)
        printError("Error: 'reflectguard score' is not implemented yet")
        return ExitCode.failure.rawValue
    }
}
