import Testing
import Synchronization
import VerdictEngine
@testable import Agent

/// Kernel enforcement is armed only where the armed check judges with state this router can see.
/// With `state = local` the armed check accepts only SYN-ACKs whose reversed 4-tuple is in the
/// pending set, filled by the protected side's SYNs this router forwards: in ingress-only mode it
/// never sees them, and arming used to black-hole the victim prefix's legitimate SYN-ACKs
/// (measured on the return router of a two-router lab: 5 of 200 connections during a flood).
@Suite struct ArmingRefusalTests {
    final class Arms: Sendable {
        let calls = Mutex<[String]>([])
    }

    static let prefix = CIDR("198.18.2.0/24")!

    static func attack(_ kind: AttackEvent.Kind = .started) -> AttackEvent {
        AttackEvent(kind: kind, vector: .synack, prefix: prefix, at: 1_000_000_000, startedAt: 1_000_000_000,
                    synackDropRate: 5000, rstDropRate: 0)
    }

    static func policy(_ mode: Mode, _ state: StateSource) -> Policy {
        var p = Policy()
        p.protected = PrefixSet([prefix])
        p.mode = mode
        p.stateSource = state
        return p
    }

    /// Runs one attack report and one overload report through a fresh enforcement; returns the
    /// arm calls made and the refusals counted.
    static func run(_ policy: Policy) -> (arms: [String], refusals: UInt64) {
        let arms = Arms()
        let e = KernelEnforcement(logger: Logger(level: .error), timeout: 60, queueCount: 1, dryRun: false,
                                  arm: { prefix, _, _ in arms.calls.withLock { $0.append(prefix.description) } })
        e.submit([attack()], queue: 0, policy: policy)
        e.overloaded(queue: 0, policy: policy, backlogFor: 2_000_000_000)
        e.cancel()   // waits for everything enqueued
        return (arms.calls.withLock { $0 }, e.armRefusals.load(ordering: .relaxed))
    }

    @Test func ingressOnlyWithLocalStateNeverArms() {
        let r = Self.run(Self.policy(.ingressOnly, .local))
        #expect(r.arms.isEmpty, "armed the pending-SYN check on a router that never sees the SYNs: \(r.arms)")
        #expect(r.refusals >= 2, "both the attack and the overload were refused and counted")
    }

    @Test func symmetricWithLocalStateArms() {
        let r = Self.run(Self.policy(.symmetric, .local))
        #expect(r.arms.contains("198.18.2.0/24"))
        #expect(r.refusals == 0)
    }

    /// With state = conntrack the ct-state check is safe to arm in either mode, but only an
    /// overload arms it: a detected attack the queue keeps up with is better judged by the agent,
    /// which holds a SYN-ACK until its replicated state arrives (the kernel cannot).
    @Test(arguments: [Mode.symmetric, Mode.ingressOnly])
    func conntrackStateArmsConntracksCheckOnOverloadOnly(_ mode: Mode) {
        let arms = Arms()
        let e = KernelEnforcement(logger: Logger(level: .error), timeout: 60, queueCount: 1, dryRun: false,
                                  arm: { prefix, _, _ in arms.calls.withLock { $0.append(prefix.description) } })
        let policy = Self.policy(mode, .conntrack)
        e.submit([Self.attack()], queue: 0, policy: policy)
        e.cancel()
        #expect(arms.calls.withLock { $0 }.isEmpty, "a detected attack alone arms nothing with state = conntrack")
        let r = Self.run(policy)
        #expect(r.arms.contains("198.18.2.0/24"), "an overload arms the ct-state check (mode \(mode.rawValue))")
        #expect(r.refusals == 0)
    }

    @Test func refusalReasonNamesTheMode() {
        let why = KernelEnforcement.armingRefusal(Self.policy(.ingressOnly, .local))
        #expect(why?.contains("ingress-only") == true)
        #expect(KernelEnforcement.armingRefusal(Self.policy(.symmetric, .local)) == nil)
    }
}
