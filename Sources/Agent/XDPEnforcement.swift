import Synchronization
import VerdictEngine
import XDPPath

/// `kernel_path`: where armed kernel enforcement runs.
public enum KernelPath: String, Sendable, CaseIterable {
    /// XDP where the interfaces and kernel allow it (native before generic), nft otherwise.
    case auto
    /// XDP or no start (exit 1 with the reason).
    case xdp
    /// The nft sets only.
    case nft
}

/// What the XDP path needs from the command line beside the policy.
public struct XDPSettings: Sendable {
    public var path: KernelPath = .auto
    /// `kernel_enforce = always`: every protected network goes into the armed trie at start.
    public var always = false
    /// `--hook host`: the protected addresses are this machine's own; its SYNs leave through the
    /// outside interfaces' tc egress hook, not an inside interface's ingress.
    public var host = false
    /// `flowspec_peer` is set: the escalation measures an armed prefix's flood in nft's per-victim
    /// counting sets, which a SYN-ACK dropped at the driver never reaches.
    public var flowspec = false
    public init() {}
}

/// The kernel's armed path at driver speed: the BPF programs of the XDPPath target, attached where
/// `inside_ifaces` / `outside_ifaces` say, with the armed trie written beside the nft armed sets
/// (the nft rules stay in place behind it: whatever the program passes, they judge as before).
///
/// Every armed entry carries its expiry and is renewed by whoever arms it (KernelEnforcement for
/// attacks, the timer here for `kernel_enforce = always`), so a killed agent's entries run out.
final class XDPEnforcement: Sendable {
    private let programs: BPFPrograms
    private let attachments: [XDPAttachment]
    private let logger: Logger
    private let pinDirectory: String?
    private let always: Bool
    private let timeout: Double
    /// The protected networks `always` keeps armed.
    private let alwaysArmed: SerialState<[CIDR]>
    let armFailures = Atomic<UInt64>(0)

    /// Chooses the path and sets XDP up when it is chosen. Returns nil (nft only) with the reason
    /// logged in the `kernel-path` event; throws only for `kernel_path = xdp` when XDP cannot run.
    static func select(_ s: XDPSettings, policy: Policy, armedTimeout: Double, logger: Logger,
                       dryRun: Bool) throws(AgentStartError) -> XDPEnforcement? {
        func nft(_ why: String) throws(AgentStartError) -> XDPEnforcement? {
            if s.path == .xdp { throw AgentStartError(message: "kernel_path = xdp: \(why)", exitCode: 1) }
            logger.info("kernel-path", [("path", .string("nft")), ("requested", .string(s.path.rawValue)), ("reason", .string(why))])
            return nil
        }
        if s.path == .nft { return try nft("kernel_path = nft") }
        // With XDP an armed prefix's flood would vanish from the escalation's view the moment it
        // is armed, and the upstream would never be asked to shed it.
        if s.path == .auto && s.flowspec {
            return try nft("flowspec_peer is set: the Flowspec escalation counts armed floods in the nft rules, which XDP drops would bypass (kernel_path = xdp chooses XDP anyway)")
        }
        if dryRun { return try nft("dry-run arms nothing") }
        // The XDP check answers from the SYNs this router records: a router that never sees them
        // must not arm it (it would drop every legitimate SYN-ACK of the prefix).
        if policy.stateSource == .conntrack {
            return try nft("state = conntrack: the XDP check knows only the SYNs this router records; conntrack's view is checked by the nft rules")
        }
        if policy.mode == .ingressOnly {
            return try nft("mode ingress-only: this router does not see the SYNs the XDP check needs, and nothing is armed in this mode")
        }
        let inside = policy.insideInterfaces.sorted(), outside = policy.outsideInterfaces.sorted()
        if outside.isEmpty {
            return try nft("outside_ifaces is empty: XDP needs the interfaces the SYN-ACKs arrive on")
        }
        if inside.isEmpty && !s.host {
            return try nft("inside_ifaces is empty: on a router the SYN recorder runs on the inside interfaces (or use --hook host)")
        }
        var config = BPFPrograms.Configuration()
        config.pendingCapacity = policy.synTableCapacity
        config.synackHorizon = policy.synackHorizon
        config.establishedHorizon = policy.establishedHorizon
        let programs: BPFPrograms
        do throws(BPFError) {
            programs = try BPFPrograms(config)
            try programs.setPrefixes("protected", policy.protected.prefixes)
            try programs.setPrefixes("allow", policy.allowlist.prefixes)
        } catch {
            return try nft("BPF programs cannot be loaded: \(error)")
        }
        var done: [XDPAttachment] = []
        func undo() { for a in done { _ = XDPAttachments.detach(a, programs) } }
        do throws(BPFError) {
            for i in outside { done.append(try XDPAttachments.attach(programs, .synackCheck, interface: i)) }
            if s.host {
                for i in outside { done.append(try XDPAttachments.attachEgress(programs, interface: i)) }
            } else {
                for i in inside { done.append(try XDPAttachments.attach(programs, .synRecord, interface: i)) }
            }
        } catch {
            undo()
            programs.close()
            return try nft("\(error)")
        }
        var pin: String? = nil
        do throws(BPFError) {
            _ = try BPFFilesystem.mountIfNeeded()
            let dir = BPFFilesystem.pinDirectory()
            try BPFFilesystem.pin(programs, at: dir)
            pin = dir
        } catch {
            // Pins are for inspection only: the programs run without them.
            logger.warning("bpf-pin-failed", [("error", .string("\(error)"))])
        }
        let generic = done.contains { $0.hook == .generic }
        logger.info("kernel-path", [
            ("path", .string("xdp")), ("requested", .string(s.path.rawValue)),
            ("reason", .string(generic ? "native XDP refused on some interface: generic there (same verdicts, after the skb is built)"
                                       : "native XDP on every outside interface")),
            ("attached", .strings(done.map(\.description))),
            ("replaced", .from(done.filter(\.replaced).count)),
            ("pinned", .string(pin ?? "no")),
        ])
        return XDPEnforcement(programs: programs, attachments: done, logger: logger, pinDirectory: pin,
                              always: s.always, timeout: armedTimeout, protected: policy.protected.prefixes)
    }

    private init(programs: BPFPrograms, attachments: [XDPAttachment], logger: Logger, pinDirectory: String?,
                 always: Bool, timeout: Double, protected: [CIDR]) {
        self.programs = programs
        self.attachments = attachments
        self.logger = logger
        self.pinDirectory = pinDirectory
        self.always = always
        self.timeout = timeout
        alwaysArmed = SerialState(label: "reflectguard.xdp", always ? protected : [])
    }

    /// `kernel_enforce = always`: arms every protected network now and renews it every quarter
    /// of armed_timeout, so the entries outlive the agent by at most that timeout.
    func start() {
        guard always else { return }
        alwaysArmed.every(max(0.5, timeout / 4), after: 0) { [weak self] prefixes in
            guard let self else { return }
            for p in prefixes { arm(p, timeout: timeout) }
        }
    }

    /// Beside the nft armed set: the same prefix, the same timeout.
    func arm(_ prefix: CIDR, timeout: Double) {
        do throws(BPFError) { try programs.arm(prefix, timeout: timeout) } catch {
            armFailures.add(1, ordering: .relaxed)
            logger.error("xdp-arm-failed", [("prefix", .string(prefix.description)), ("error", .string("\(error)"))])
        }
    }

    /// A reload: the tries follow the new protected networks and allowlist.
    func update(_ policy: Policy) {
        alwaysArmed.async { [self] alwaysArmed in
            do throws(BPFError) {
                try programs.setPrefixes("protected", policy.protected.prefixes)
                try programs.setPrefixes("allow", policy.allowlist.prefixes)
                if always {
                    alwaysArmed = policy.protected.prefixes
                    for p in alwaysArmed { arm(p, timeout: timeout) }
                }
            } catch {
                logger.error("xdp-update-failed", [("error", .string("\(error)"))])
            }
        }
    }

    /// At exit: the programs leave the interfaces (only where they are still ours) and the pins
    /// go. Armed entries go with the maps.
    func release() {
        alwaysArmed.stop()
        var detached: [String] = [], failed: [String] = []
        for a in attachments {
            if XDPAttachments.detach(a, programs) { detached.append(a.description) } else { failed.append(a.description) }
        }
        if let pinDirectory { BPFFilesystem.unpin(pinDirectory) }
        logger.info("xdp-detached", [("detached", .strings(detached)), ("failed", .strings(failed))])
        programs.close()
    }

    /// Prometheus text: the programs' per-CPU counters summed, by reason, as the agent counts
    /// packets (`reflectguard_packets_total`), plus the path's state.
    func metrics() -> String {
        var out = MetricsRegistry.family("reflectguard_xdp_packets_total", "counter",
                                         "Packets the XDP programs judged, by verdict and reason (syn-tracked: SYNs recorded; not-armed, not-parsed: passed to the nft rules).")
        if let c = try? programs.counters() {
            for k in BPFPrograms.Counter.allCases {
                out += "reflectguard_xdp_packets_total{verdict=\"\(k.dropped ? "drop" : "accept")\",reason=\"\(k.reason)\"} \(c[k] ?? 0)\n"
            }
        }
        out += MetricsRegistry.family("reflectguard_xdp_attached", "gauge", "XDP/tc programs of the agent attached, by interface and hook.")
        for a in attachments {
            out += "reflectguard_xdp_attached{interface=\"\(a.interface)\",program=\"\(a.program.rawValue)\",hook=\"\(a.hook.rawValue)\"} 1\n"
        }
        out += MetricsRegistry.family("reflectguard_xdp_arm_failures_total", "counter", "Failed writes to the XDP armed trie.")
        out += "reflectguard_xdp_arm_failures_total \(armFailures.load(ordering: .relaxed))\n"
        return out
    }
}
