import PacketParser

/// The protected networks (or the allowlist) flattened into buffers the hot path reads without
/// array bounds checks, retains or exclusivity checks; rebuilt on every policy change.
/// Deliberately linear scans: sites list a handful of prefixes.
///
/// IPv4 prefixes (inside `::ffff:0:0/96`, as IPv4 addresses are stored) are kept apart as 32-bit
/// (network, mask) pairs, so an IPv4 address costs one 32-bit compare per IPv4 prefix and never
/// looks at the IPv6 ones, unless an IPv6 prefix is wide enough to cover mapped addresses.
/// Same answers as comparing every prefix on all 128 bits (callgrind: the two lookups per
/// packet were ~12% of a decision that way).
struct PrefixMatcher {
    /// IPv4 prefixes: network in the low 32 bits, mask in the high 32, both as the address's
    /// last four bytes load (the high half of its second 64-bit lane).
    private let v4: UnsafeMutablePointer<UInt64>
    private let v4Count: Int
    /// Every other prefix as (network lanes, mask lanes).
    private let other: UnsafeMutablePointer<SIMD2<UInt64>>
    private let otherCount: Int
    /// Some prefix of `other` contains IPv4-mapped addresses (`::/0`, `::ffff:0:0/80`, …).
    private let otherCoversV4: Bool

    init(_ set: PrefixSet) {
        let mappedBase = SIMD2<UInt64>(0, 0xffff_0000)
        var fours: [UInt64] = [], others: [SIMD2<UInt64>] = []
        var covers = false
        for p in set.prefixes {
            let net = unsafeBitCast(p.address.bytes, to: SIMD2<UInt64>.self)
            let mask = unsafeBitCast(CIDR.mask(p.length), to: SIMD2<UInt64>.self)
            if p.length >= 96 && net[0] == 0 && net[1] & 0xffff_ffff == 0xffff_0000 {
                fours.append((net[1] >> 32) | (mask[1] & 0xffff_ffff_0000_0000))
            } else {
                others += [net, mask]
                let d = (mappedBase & mask) ^ net
                if d[0] | d[1] == 0 { covers = true }
            }
        }
        v4Count = fours.count
        v4 = .allocate(capacity: max(1, fours.count))
        v4.initialize(from: fours, count: fours.count)
        otherCount = others.count / 2
        other = .allocate(capacity: max(1, others.count))
        other.initialize(from: others, count: others.count)
        otherCoversV4 = covers
    }

    func deallocate() { v4.deallocate(); other.deallocate() }

    var isEmpty: Bool { v4Count == 0 && otherCount == 0 }

    /// How many prefixes `index(of:)` numbers.
    var count: Int { v4Count + otherCount }

    /// The number (0..<count) of the first prefix holding `a`, or -1: IPv4 prefixes first, in
    /// the order `contains` tries them.
    @inline(__always)
    func index(of a: IPAddress) -> Int {
        let x = unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self)
        if x[0] == 0 && x[1] & 0xffff_ffff == 0xffff_0000 {
            let y = x[1] >> 32
            var i = 0
            while i < v4Count {
                let e = v4[i]
                if y & (e >> 32) == e & 0xffff_ffff { return i }
                i &+= 1
            }
            if !otherCoversV4 { return -1 }
        }
        var i = 0
        while i < otherCount {
            let d = (x & other[2 &* i &+ 1]) ^ other[2 &* i]
            if d[0] | d[1] == 0 { return v4Count &+ i }
            i &+= 1
        }
        return -1
    }

    @inline(__always)
    func contains(_ a: IPAddress) -> Bool { index(of: a) >= 0 }
}
