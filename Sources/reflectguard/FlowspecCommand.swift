import Flowspec
import Rules

/// `reflectguard flowspec show`: what the agent in this network namespace announces upstream
/// now, the BGP session's state, and the speaker's own Flowspec table.
enum FlowspecCommand {
    static let spec = CommandSpec(
        path: "reflectguard flowspec",
        overview: "Show the BGP Flowspec escalation: the session and the routes announced now.",
        usage: ["show [--rules FILE] [-D NAME=VALUE]..."],
        arguments: [("show", "The session, the routes the agent announced, and the speaker's Flowspec table.")],
        options: [SharedOptions.rules, SharedOptions.define],
        positionals: 1...1,
        argumentKind: "action")

    static func main(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, spec)
        guard a.positionals[0] == "show" else {
            throw CommandExit.usage(UsageError(message: "unknown action '\(a.positionals[0])' (show)"), spec)
        }
        let resolved: ResolvedRules
        do {
            let file = try a.value("--rules").map { p throws(RulesError) in try RulesFile.load(path: p) } ?? .embedded
            resolved = try RulesConfig.resolve(rules: file, protect: [], defines: a.all("-D"))
        } catch {
            if error.fromCommandLine { throw CommandExit.usage(UsageError(message: error.message), spec) }
            printError("Error: \(error)")
            return error.isUnreadableFile ? ExitCode.failure.rawValue : ExitCode.rules.rawValue
        }
        let config: FlowspecConfig
        do throws(FlowspecConfigError) {
            guard let c = try FlowspecConfig(values: resolved.values, protected: resolved.policy.protected) else {
                print("flowspec: off (flowspec_peer is empty)")
                return ExitCode.success.rawValue
            }
            config = c
        } catch {
            printError("Error: \(resolved.file.name): \(error)")
            return ExitCode.rules.rawValue
        }
        let speaker = GoBGPSpeaker(config: config, onEvent: { _ in })
        let state: String
        do throws(FlowspecError) { state = try speaker.sessionState() } catch {
            printError("Error: no Flowspec speaker answers at \(speaker.target) (is 'reflectguard run' with flowspec_peer running in this network namespace?): \(error.message)")
            return ExitCode.failure.rawValue
        }
        print("speaker: \(speaker.runsDaemon ? "gobgpd (the agent's child)" : "external gobgpd"), \(speaker.target)")
        print("session: \(config.peer) AS \(config.peerAS): \(state)")
        let (routes, withdrawing) = GoBGPSpeaker.split(record: speaker.recorded() ?? [])
        print("announced: \(routes.count)")
        for r in routes { print("  \(r)") }
        if !withdrawing.isEmpty {
            print("withdrawal failed, retried every 2 s: \(withdrawing.count)")
            for r in withdrawing { print("  \(r)") }
        }
        print("speaker table:")
        do throws(FlowspecError) {
            for line in try speaker.rib().split(separator: "\n") { print("  \(line)") }
        } catch {
            printError("Error: \(error.message)")
            return ExitCode.failure.rawValue
        }
        return ExitCode.success.rawValue
    }
}
