import PacketParser

/// An address prefix, IPv4 or IPv6. IPv4 prefixes live in the IPv4-mapped space (/24 → /120).
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    /// Prefix length in the 128-bit space.
    public var length: UInt8

    public init(address: IPAddress, length: UInt8) {
        self.address = IPAddress(bytes: address.bytes & CIDR.mask(length))
        self.length = length
    }

    /// Parses `a.b.c.d/n`, `a.b.c.d`, `x::y/n` or `x::y`. Nil on anything else.
    public init?(_ text: String) {
        guard let c = try? CIDR(parsing: text) else { return nil }
        self = c
    }

    /// Parses a prefix as nft reads it, or says why not. nft reads the prefix length with
    /// strtoull base 0: `/024` is octal (/20), `/064` is /52, `/0x18` is /24 and `/08` a syntax
    /// error (checked with `nft -f` on Linux 6.18). So the length is plain decimal without a
    /// leading zero here ("0" alone is fine), like the address (`IPAddress.init(parsing:)`).
    public init(parsing text: String) throws(AddressSyntaxError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw AddressSyntaxError("'\(text)' has more than one '/'") }
        let addr: IPAddress
        do { addr = try IPAddress(parsing: parts[0]) } catch {
            throw parts.count == 2 ? AddressSyntaxError("'\(text)': \(error)") : error
        }
        let v4 = addr.isIPv4Mapped && !parts[0].contains(":")
        let maxLen = v4 ? 32 : 128
        var len = maxLen
        if parts.count == 2 {
            let p = parts[1]
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let n = Int(p), n <= maxLen else {
                throw AddressSyntaxError("'\(text)': prefix length '/\(p)' is not a number from 0 to \(maxLen)")
            }
            guard p.count == 1 || p.first != "0" else {
                throw AddressSyntaxError("'\(text)': prefix length '/\(p)' has a leading zero, which nft reads as octal")
            }
            len = n
        }
        self.init(address: addr, length: UInt8(v4 ? len + 96 : len))
    }

    public var isIPv4: Bool { length >= 96 && address.isIPv4Mapped }

    public static func mask(_ length: UInt8) -> SIMD16<UInt8> {
        var m = SIMD16<UInt8>()
        var remaining = Int(length)
        for i in 0..<16 {
            let bits = min(8, max(0, remaining))
            m[i] = bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            remaining -= 8
        }
        return m
    }

    /// `mask(length)` as two 64-bit lanes (`IPAddress.lanes`).
    static func maskLanes(_ length: UInt8) -> SIMD2<UInt64> { unsafeBitCast(mask(length), to: SIMD2<UInt64>.self) }

    /// Whether the address `x` lies in the prefix (`network`, `mask`), all as lanes: the one
    /// address-in-prefix compare, which `PrefixLanes` runs per prefix.
    @inline(__always)
    static func matches(_ x: SIMD2<UInt64>, _ network: SIMD2<UInt64>, _ mask: SIMD2<UInt64>) -> Bool {
        let d = (x & mask) ^ network
        return d[0] | d[1] == 0
    }

    public func contains(_ a: IPAddress) -> Bool {
        CIDR.matches(a.lanes, address.lanes, CIDR.maskLanes(length))
    }

    public var description: String {
        isIPv4 ? "\(address)/\(Int(length) - 96)" : "\(address)/\(length)"
    }
}

/// A small set of prefixes (protected networks, allowlist), matched by `PrefixLanes`, the one
/// prefix matcher (the engine keeps its own copy in a `PrefixMatcher`).
public struct PrefixSet: Sendable, Equatable {
    public private(set) var prefixes: [CIDR]
    /// `prefixes` compiled for matching.
    private(set) var lanes: PrefixLanes

    public init(_ prefixes: [CIDR] = []) {
        self.prefixes = prefixes
        self.lanes = PrefixLanes(prefixes)
    }

    public static func == (a: PrefixSet, b: PrefixSet) -> Bool { a.prefixes == b.prefixes }

    public var isEmpty: Bool { prefixes.isEmpty }

    public mutating func insert(_ p: CIDR) {
        guard !prefixes.contains(p) else { return }
        prefixes.append(p)
        lanes.append(p)
    }

    public func contains(_ a: IPAddress) -> Bool {
        lanes.v4.withUnsafeBufferPointer { v4 in
            lanes.other.withUnsafeBufferPointer { other in
                PrefixLanes.index(of: a, v4: v4, other: other, otherCoversV4: lanes.otherCoversV4) >= 0
            }
        }
    }

    /// `contains` for an address read from an IPv6 header: IPv6 prefixes only (see
    /// `PrefixMatcher.containsAsIPv6`).
    public func containsAsIPv6(_ a: IPAddress) -> Bool {
        lanes.other.withUnsafeBufferPointer { other in
            PrefixLanes.index(of: a, v4: UnsafeBufferPointer(start: nil, count: 0), other: other, otherCoversV4: true) >= 0
        }
    }
}

public enum Mode: String, Sendable, CaseIterable {
    /// The router sees both directions: SYN-ACKs are checked against tracked SYNs.
    case symmetric
    /// Asymmetric routing, inbound only: SYN-ACKs are scored from evidence.
    case ingressOnly = "ingress-only"
}

/// Where the engine learns which SYNs the protected side sent.
public enum StateSource: String, Sendable, CaseIterable {
    /// Only the SYNs this router forwards (the agent's own flow table).
    case local
    /// Those, and the kernel's conntrack table (ctnetlink), which conntrackd fills with the flows
    /// the other router of an asymmetric pair forwarded. `run` only: captures carry no conntrack.
    case conntrack
}

/// What a SYN-ACK without state gets while conntrack replication is stalled (`ct_miss`).
public enum ConntrackMiss: String, Sendable, CaseIterable {
    /// The ingress-only evidence score (`synack-score-pass` / `synack-score-drop`).
    case score
    /// Dropped as `unsolicited-synack`, as while replication is healthy.
    case drop
    /// Accepted as `ct-miss-accept`.
    case accept
}

public enum Track: String, Sendable, CaseIterable {
    /// Only handshake packets and RSTs are queued (default).
    case handshake
    /// Every packet of protected flows is queued, so RST sequence windows can be judged.
    case full
}

/// Everything the engine decides with. Built from the rules file's `define`s plus command-line
/// overrides (Rules target), so the kernel's queue rules and the engine's policy never disagree.
public struct Policy: Sendable, Equatable {
    public var protected = PrefixSet()
    public var allowlist = PrefixSet()
    public var mode: Mode = .symmetric
    public var track: Track = .handshake
    /// The protected hosts' ephemeral (client) ports; Linux default 32768-60999.
    public var ephemeralPorts: ClosedRange<UInt16> = 32768...60999
    /// RSTs per second (and burst) to one protected address on flows nobody tracks, whole agent.
    public var rstRate: Double = 50
    public var rstBurst: Double = 100
    /// The same per destination prefix (/24 IPv4, /64 IPv6).
    public var rstPrefixRate: Double = 500
    public var rstPrefixBurst: Double = 1000
    /// The same per configured protected prefix as a whole: one fixed bucket each, never
    /// evicted, so no spread over more addresses or /64s than the bucket tables hold gets more.
    public var rstNetworkRate: Double = 5000
    public var rstNetworkBurst: Double = 10000
    /// RST attacks (whole agent, like the rates above): an attack starts on a /24 or /64 when its
    /// untracked RSTs in a second exceed `rstAttackFactor` times its learnt baseline and
    /// `rstAttackFloor`, on a protected network when they exceed the factor and
    /// `rstNetworkAttackFloor`. While it lasts, untracked RSTs to it (and to each address in it)
    /// are held to their baseline, at least `rstHoldRate` per second, under the static ceilings.
    public var rstAttackFactor: Double = 4
    public var rstAttackFloor: Double = 50
    public var rstNetworkAttackFloor: Double = 200
    public var rstHoldRate: Double = 5
    /// Seconds of packet time after start in which baselines learn fast (detection is on).
    public var rstWarmup: Double = 10
    /// How long a flow whose handshake was seen stays tracked without a packet that refreshes it
    /// (seconds): with track = handshake nothing after the handshake refreshes it, and a RST
    /// ending a flow older than this is judged as untracked.
    public var establishedHorizon: Double = 3600
    /// With track = handshake the rules also queue one packet the protected side sends per flow
    /// and `learnInterval` seconds (the kernel's `learn4`/`learn6` sets: a flow's first packet
    /// not in the set is queued and added; its SYNs and SYN-ACKs refresh it), so the engine
    /// follows flows older than itself (the agent flushes the sets at start), past the
    /// established horizon, or evicted from its table; and the kernel knows them when an RST
    /// attack is armed. `decideObserved` queues exactly those packets.
    public var learnInterval: Double = 300
    /// Kernel arming of an RST attack (`rst_armed4`/`rst_armed6`): RSTs to the armed prefix on
    /// flows the kernel does not know (pending SYNs, learnt flows) are held to this many a
    /// second, and burst, per /24 or /64 before they reach the queue.
    public var rstArmedRate: Double = 50
    public var rstArmedBurst: Double = 100
    /// Guarded flows: with track = handshake, every packet of a flow with a protected end and
    /// either port in `trackFullPorts` or either end in `trackFullHosts` is queued too, so its
    /// RSTs get the full window check, and only an exact RST (RFC 5961 §3.2) passes.
    public var trackFullPorts: [ClosedRange<UInt16>] = []
    public var trackFullHosts = PrefixSet()

    /// Whether a packet belongs to a guarded flow.
    public func guards(_ p: ParsedPacket) -> Bool {
        trackFullPorts.contains { $0.contains(p.sourcePort) || $0.contains(p.destinationPort) }
            || trackFullHosts.contains(p.source) || trackFullHosts.contains(p.destination)
    }

    /// RSTs protected hosts send in answer to unsolicited SYN-ACKs, per source address.
    public var backscatterRate: Double = 10
    public var backscatterBurst: Double = 20
    /// How long a tracked flow lives without a packet that refreshes it (seconds): a Linux
    /// client retries its SYN for up to 131 s. In SYN-SENT only the SYN's copies refresh it;
    /// after the handshake its SYN-ACK and RSTs do (and with track = full every packet).
    public var synHorizon: Double = 131
    /// How long after the latest copy of a SYN its SYN-ACK is accepted (seconds): a server may
    /// retransmit its SYN-ACK for up to 63 s after the last SYN it got (Linux). Once a SYN-ACK
    /// was accepted, its retransmissions are accepted for as long as the flow lives.
    public var synackHorizon: Double = 63
    /// Ingress-only: drop SYN-ACKs whose evidence score is at or above this (0-100).
    public var scoreThreshold: Int = 60
    /// Unsolicited SYN-ACKs per second to one victim prefix that count as an attack (arms kernel
    /// enforcement for that prefix inline).
    public var attackRate: Double = 200
    /// Rates above are for the whole agent; each queue's engine gets its share.
    public var queueCount: Int = 1
    /// Capacity of the tracked-SYN table (entries; 64 bytes each plus 1/8 slack). Fixed when
    /// the engine is created: `updatePolicy` keeps the table it has.
    public var synTableCapacity: Int = 1 << 20
    public var insideInterfaces: [String] = []
    public var outsideInterfaces: [String] = []
    /// Bytes of each queued packet the agent reads, from the network header on (the NFQUEUE
    /// copy range). `decideObserved` judges a captured frame on what `run` would have had of it.
    public var copyRange: Int = Policy.defaultCopyRange
    /// IPv6's 40 bytes, a few ordinary extension headers and a whole 60-byte TCP header fit; a
    /// header beyond it is judged by `Reason.unreadableHeader`, whatever the range.
    public static let defaultCopyRange = 256

    /// `state`: local (default) or conntrack.
    public var stateSource: StateSource = .local
    /// `ct_wait`: how long `run` holds a SYN-ACK whose conntrack state has not arrived yet
    /// (seconds; 0 decides at once). Replication measured between two routers: p50 0.4 ms,
    /// p99 0.5-4 ms under a flood, max 5 ms (once 35 ms); 50 ms covers all of it with room,
    /// and costs a spoofed SYN-ACK's queue slot no longer than that.
    public var conntrackWait: Double = 0.05
    /// `ct_miss`: what a SYN-ACK without state gets while replication is stalled.
    public var conntrackMiss: ConntrackMiss = .score
    /// `ct_sync_iface`: the interface of conntrackd's sync link on this router, whose traffic
    /// tells whether replication is alive (`ReplicationWatch`); nil judges by the flows.
    public var conntrackSyncInterface: String? = nil
    /// Conntrack entries each engine mirrors (TCP flows with a protected end), fixed at start.
    public var conntrackTableCapacity: Int = 1 << 18

    public init() {}
}
