import Agent
import NftBackend
import Rules
import Conntrack
import XDPPath
#if canImport(Glibc)
import Glibc
#endif

/// `reflectguard nft generate|check|apply|remove`: the rules file rendered for a hook and a queue
/// backend, checked or applied atomically through libnftables, or removed.
enum NftCommand {
    static let kernelOnly = OptionSpec(name: "--kernel-only", value: nil,
        help: "The standalone ruleset that enforces in the kernel alone, no agent, no conntrack.")
    static let force = OptionSpec(name: "--force", value: nil,
        help: "Apply or remove even while an agent runs in this network namespace and uses the table.")

    static let spec = CommandSpec(
        path: "reflectguard nft",
        overview: "Generate, check, apply or remove ReflectGuard's nftables rules.",
        usage: ["generate|check|apply|remove [options]"],
        arguments: [("generate", "Print exactly what apply loads for the backend and hook."),
                    ("check", "Check the rules against the running kernel; change nothing."),
                    ("apply", "Check, then apply atomically (again: replaces chains, keeps set contents)."),
                    ("remove", "Delete ReflectGuard's table and tagged xtables rules, nothing else (refused while an agent runs).")],
        options: [SharedOptions.rules, SharedOptions.config, SharedOptions.protect, SharedOptions.define, SharedOptions.queue,
                  SharedOptions.backend, SharedOptions.hook, kernelOnly, force],
        positionals: 1...1,
        argumentKind: "action")

    static func main(_ args: [String]) throws(CommandExit) -> Int32 {
        let a = try parse(args, spec)
        let action = a.positionals[0]
        guard ["generate", "check", "apply", "remove"].contains(action) else {
            throw CommandExit.usage(UsageError(message: "unknown action '\(action)' (generate, check, apply or remove)"), spec)
        }
        if action == "remove" {
            // Whatever its owner record says: an agent running with --no-apply reads its packets
            // through these rules too.
            if case .agent(let pid) = NamespaceLock.holder() {
                guard a.flag("--force") else {
                    printError("Error: \(agentName(pid)) runs in this network namespace and receives its packets through these rules; "
                               + "stop it first (it removes its own rules at exit), or give --force")
                    return ExitCode.failure.rawValue
                }
                printError("warning: removing the rules of \(agentName(pid)): it receives no packets until they are applied again (SIGHUP)")
            }
            do { try NftRuleset.remove() } catch { return fail(error) }
            // The XDP path's programs (kernel_path) go with the rules: found by name on every
            // interface of this namespace, whoever attached them.
            let detached = XDPAttachments.detachAll()
            BPFFilesystem.unpin(BPFFilesystem.pinDirectory())
            if !detached.isEmpty { printError("removed XDP programs: \(detached.joined(separator: ", "))") }
            return ExitCode.success.rawValue
        }
        let hookValue = try SharedOptions.hook(a, spec)
        let defines = try SharedOptions.defines(a, spec)
        let resolved: ResolvedRules
        do {
            resolved = try SharedOptions.resolve(a, defines: defines)
        } catch {
            if error.fromCommandLine { throw CommandExit.usage(UsageError(message: error.message), spec) }
            printError("Error: \(error)")
            return error.isUnreadableFile ? ExitCode.failure.rawValue : ExitCode.rules.rawValue
        }

        var backendValue: Backend
        if a.flag("--kernel-only") {
            backendValue = .none
        } else if let chosen = try SharedOptions.backend(a, spec) {
            backendValue = chosen
        } else {
            do { backendValue = try NftRuleset.probeBackend() } catch {
                guard action == "generate" else { return fail(error) }
                // Printing needs no privilege; say what was assumed.
                printError("note: cannot probe the kernel (\(error.message)); generating for --backend nft")
                backendValue = .nft
            }
        }

        do {
            switch action {
            case "generate":
                print(NftRuleset.generate(resolved, hook: hookValue, backend: backendValue), terminator: "")
            case "check":
                try NftRuleset.check(resolved, hook: hookValue, backend: backendValue)
                let names = [resolved.file.name] + (resolved.config.map { [$0.name] } ?? [])
                if resolved.policy.protected.isEmpty {
                    printError("note: no protected network: 'reflectguard run' refuses to start until protected_v4 or protected_v6 names one")
                }
                if resolved.policy.stateSource == .conntrack {
                    // The rules can be right and the kernel still give the agent nothing to learn.
                    let text = resolved.render(hook: hookValue, backend: backendValue)
                    for p in ConntrackReadiness.problems(rulesText: text) { printError("warning: state = conntrack: \(p)") }
                }
                print("\(names.joined(separator: " + ")): OK (hook \(hookValue.rawValue), backend \(backendValue.rawValue))")
            default:
                if let refusal = try applyRefusal(force: a.flag("--force")) {
                    printError(refusal)
                    return ExitCode.failure.rawValue
                }
                try NftRuleset.apply(resolved, hook: hookValue, backend: backendValue, owner: .nftApplyNow())
                if backendValue == .xt { printError(NftRuleset.listingWarning) }
            }
        } catch {
            return fail(error)
        }
        return ExitCode.success.rawValue
    }

    /// `apply` over the rules of a running agent that applied them itself would replace the
    /// rules its engines judge by (queues nobody reads, networks it does not protect): refused
    /// without --force; the agent's own reload (SIGHUP) is the way. An agent running with
    /// --no-apply leaves the rules to `nft apply`: then applying is the normal thing to do.
    static func applyRefusal(force: Bool) throws(NftError) -> String? {
        guard case .agent(let pid) = NamespaceLock.holder() else { return nil }
        guard let owner = try NftRuleset.owner(), case .agent(let recorded, _) = owner, pid == nil || pid == recorded else {
            return nil
        }
        if force {
            printError("warning: replacing the rules of \(agentName(pid)); its engines keep judging by its own rules file")
            return nil
        }
        return "Error: table inet reflectguard belongs to \(agentName(pid)), which applied it; change its rules file "
            + "and reload it (SIGHUP: systemctl reload reflectguard), or stop it first, or give --force"
    }

    static func agentName(_ pid: Int32?) -> String {
        pid.map { "the reflectguard agent (pid \($0))" } ?? "the reflectguard agent"
    }

    private static func fail(_ error: NftError) -> Int32 {
        var m = error.message
        while m.hasSuffix("\n") { m.removeLast() }
        printError(error.isRulesError ? m : "Error: \(m)")
        return error.isRulesError ? ExitCode.rules.rawValue : ExitCode.failure.rawValue
    }
}
