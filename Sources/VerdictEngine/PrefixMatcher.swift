import PacketParser

/// The one way an address is matched against a list of prefixes, for `PrefixSet` (the policy's
/// value) and `PrefixMatcher` (the engine's copy of it): both compile the prefixes here and ask
/// `index(of:…)`. Deliberately linear scans: sites list a handful of prefixes.
///
/// IPv4 prefixes (inside `::ffff:0:0/96`, as IPv4 addresses are stored) are kept apart as 32-bit
/// (network, mask) pairs, so an IPv4 address costs one 32-bit compare per IPv4 prefix and never
/// looks at the IPv6 ones, unless an IPv6 prefix is wide enough to cover mapped addresses.
/// Same answers as comparing every prefix on all 128 bits (callgrind: the two lookups per
/// packet were ~12% of a decision that way).
struct PrefixLanes: Sendable {
    /// IPv4 prefixes: network in the low 32 bits, mask in the high 32, both as the address's
    /// last four bytes load (the high half of its second 64-bit lane).
    var v4: [UInt64] = []
    /// Every other prefix as (network lanes, mask lanes), two entries each.
    var other: [SIMD2<UInt64>] = []
    /// Some prefix of `other` contains IPv4-mapped addresses (`::/0`, `::ffff:0:0/80`, …).
    var otherCoversV4 = false

    init(_ prefixes: [CIDR]) {
        for p in prefixes { append(p) }
    }

    mutating func append(_ p: CIDR) {
        let net = p.address.lanes
        let mask = CIDR.maskLanes(p.length)
        if p.length >= 96 && IPAddress.lanesAreV4(net) {
            v4.append((net[1] >> 32) | (mask[1] & 0xffff_ffff_0000_0000))
        } else {
            other += [net, mask]
            if CIDR.matches(SIMD2<UInt64>(0, 0xffff_0000), net, mask) { otherCoversV4 = true }
        }
    }

    /// The number of the first prefix holding `a`, or -1: IPv4 prefixes first, in list order.
    @inline(__always)
    static func index(of a: IPAddress, v4: UnsafeBufferPointer<UInt64>, other: UnsafeBufferPointer<SIMD2<UInt64>>,
                      otherCoversV4: Bool) -> Int {
        let x = a.lanes
        if IPAddress.lanesAreV4(x) {
            let y = x[1] >> 32
            var i = 0
            while i < v4.count {
                let e = v4[i]
                if y & (e >> 32) == e & 0xffff_ffff { return i }
                i &+= 1
            }
            if !otherCoversV4 { return -1 }
        }
        var i = 0
        while i < other.count / 2 {
            if CIDR.matches(x, other[2 &* i], other[2 &* i &+ 1]) { return v4.count &+ i }
            i &+= 1
        }
        return -1
    }
}

/// The engine's copy of a `PrefixSet` (protected networks, allowlist, guarded hosts), in memory it
/// owns, so the hot path reads it without array bounds checks, retains or exclusivity checks;
/// replaced on every policy change (the old one freed as it is replaced: `~Copyable`).
struct PrefixMatcher: ~Copyable {
    private let v4: OwnedBuffer<UInt64>
    private let other: OwnedBuffer<SIMD2<UInt64>>
    private let otherCoversV4: Bool

    init(_ set: PrefixSet) {
        v4 = OwnedBuffer(copying: set.lanes.v4)
        other = OwnedBuffer(copying: set.lanes.other)
        otherCoversV4 = set.lanes.otherCoversV4
    }

    var isEmpty: Bool { v4.count == 0 && other.count == 0 }

    /// How many prefixes `index(of:)` numbers.
    var count: Int { v4.count + other.count / 2 }

    /// The number (0..<count) of the first prefix holding `a`, or -1: IPv4 prefixes first, in
    /// the order `contains` tries them.
    @inline(__always)
    func index(of a: IPAddress) -> Int {
        PrefixLanes.index(of: a, v4: UnsafeBufferPointer(start: v4.base, count: v4.count),
                          other: UnsafeBufferPointer(start: other.base, count: other.count), otherCoversV4: otherCoversV4)
    }

    @inline(__always)
    func contains(_ a: IPAddress) -> Bool { index(of: a) >= 0 }

    /// Whether an address read from an IPv6 header lies in one of the IPv6 prefixes. An
    /// IPv4-mapped one there is not the IPv4 host: nft matches an IPv6 header against the `6`
    /// sets only, so the IPv4 prefixes are skipped.
    func containsAsIPv6(_ a: IPAddress) -> Bool {
        PrefixLanes.index(of: a, v4: UnsafeBufferPointer(start: nil, count: 0),
                          other: UnsafeBufferPointer(start: other.base, count: other.count), otherCoversV4: true) >= 0
    }
}
