/// `reflectguard lab`: placeholder until its issue lands.
enum LabCommand {
    static let spec = CommandSpec(path: "reflectguard lab", overview: "(not yet)", usage: ["[options]"])
    static func main(_ args: [String]) -> Int32 {
        _ = parseOrExit(args, spec)
        printError("Error: 'reflectguard lab' is not implemented yet")
        return ExitCode.failure.rawValue
    }
}
