import PacketParser

/// The protected networks (or the allowlist) flattened into one buffer of (network, mask) pairs
/// the hot path reads without array bounds checks, retains or exclusivity checks; rebuilt on
/// every policy change. Deliberately a linear scan: sites list a handful of prefixes.
struct PrefixMatcher {
    private var pairs: UnsafeMutablePointer<SIMD2<UInt64>>
    private var count: Int

    init(_ set: PrefixSet) {
        count = set.prefixes.count
        pairs = .allocate(capacity: max(1, 2 * count))
        for (i, p) in set.prefixes.enumerated() {
            pairs[2 * i] = unsafeBitCast(p.address.bytes, to: SIMD2<UInt64>.self)
            pairs[2 * i + 1] = unsafeBitCast(CIDR.mask(p.length), to: SIMD2<UInt64>.self)
        }
    }

    func deallocate() { pairs.deallocate() }

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    func contains(_ a: IPAddress) -> Bool {
        let x = unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self)
        var i = 0
        while i < count {
            let d = (x & pairs[2 &* i &+ 1]) ^ pairs[2 &* i]
            if d[0] | d[1] == 0 { return true }
            i &+= 1
        }
        return false
    }
}
