import Conntrack
import NFQueue
import PacketParser
import VerdictEngine

/// TCP flows established before the agent started, read once from the kernel's conntrack table
/// so every engine knows them before its first packet. Without them a flow silent since before
/// the start is unknown until its protected end sends: its RSTs meet the untracked budgets, and
/// on a guarded port a blind reset aimed at it is not judged against its window at all.
///
/// Every engine gets every flow. The kernel's queue balancing (`--queue-balance`, nft's range)
/// hashes the address pair with a key it draws at random when the rule is loaded (jhash_initval
/// in xt_NFQUEUE), which userspace cannot read, so which queue a flow's packets reach is not ours
/// to compute: one engine holds the flow it sees, the others a seed that ages out unused
/// (`established_horizon`). The cap bounds that cost.
struct EstablishedSeeds: Sendable {
    struct Flow: Sendable, Equatable {
        var protectedEnd: IPAddress
        var port: UInt16
        var peer: IPAddress
        var peerPort: UInt16
    }

    var flows: [Flow] = []
    /// TCP entries read, of any state and address.
    var entries = 0
    /// ESTABLISHED entries with a protected end, seeded or not.
    var established = 0
    /// Those left out by the cap.
    var capped: Int { established - flows.count }
    /// Why the table could not be read (whole), nil when it was.
    var failure: String?

    /// At most a quarter of each engine's flow table, so seeds never crowd out the handshakes
    /// the table is for (`syn_table_size` moves both).
    static func limit(_ policy: Policy) -> Int { max(16, policy.synTableCapacity / 4) }

    /// Keeps the ESTABLISHED TCP entries with an end in a protected network, the first `limit`.
    mutating func take(_ fact: ConntrackFact, policy: Policy, limit: Int) {
        entries += 1
        guard fact.kind == .present, fact.state == .established else { return }
        let flow: Flow
        if policy.protected.contains(fact.source) {
            flow = Flow(protectedEnd: fact.source, port: fact.sourcePort, peer: fact.destination, peerPort: fact.destinationPort)
        } else if policy.protected.contains(fact.destination) {
            flow = Flow(protectedEnd: fact.destination, port: fact.destinationPort, peer: fact.source, peerPort: fact.sourcePort)
        } else {
            return
        }
        established += 1
        if flows.count < limit { flows.append(flow) }
    }

    /// One dump of the table (IPv4, then IPv6). A dump that fails part-way keeps what it read
    /// and says why; one that cannot start (no conntrack in this network namespace) keeps none.
    /// `dump` is ctnetlink's (`ConntrackSocket.dump`); tests hand in their own.
    static func read(policy: Policy, limit: Int,
                     dump: ((ConntrackFact) -> Void) throws(SystemCallError) -> Void = Self.dumpConntrack) -> EstablishedSeeds {
        var seeds = EstablishedSeeds()
        do throws(SystemCallError) {
            try dump { seeds.take($0, policy: policy, limit: limit) }
        } catch {
            seeds.failure = "\(error)"
        }
        return seeds
    }

    /// The kernel's table through a socket of its own, 10 s at most (a table of millions).
    static func dumpConntrack(_ body: (ConntrackFact) -> Void) throws(SystemCallError) {
        _ = try ConntrackSocket.dumpTable(timeout: 10, body)
    }
}

/// What the start's seeding did, for /metrics (`reflectguard_ct_seed*`).
struct SeedFigures: Sendable {
    var seeded: Int
    var capped: Int
    var successful: Bool
}
