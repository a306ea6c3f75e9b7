/// `reflectguard nft`: placeholder until its issue lands.
enum NftCommand {
    static let spec = CommandSpec(path: "reflectguard nft", overview: "(not yet)", usage: ["[options]"])
    static func main(_ args: [String]) -> Int32 {
        _ = parseOrExit(args, spec)
        printError("Error: 'reflectguard nft' is not implemented yet")
        return ExitCode.failure.rawValue
    }
}
