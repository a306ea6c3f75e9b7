import Testing
import PacketParser
@testable import VerdictEngine
import TestSupport

/// The matcher splits IPv4 prefixes from the rest; it (and `PrefixSet`, which matches the same
/// way) must answer exactly as `CIDR.contains` on all 128 bits, including IPv6 prefixes wide
/// enough to hold IPv4-mapped addresses.
@Suite struct PrefixMatcherTests {
    static let sets: [[String]] = [
        ["198.18.2.0/24", "2001:db8:2::/64"],
        ["198.18.0.0/15", "192.0.2.7", "203.0.113.128/25", "2001:db8::/32"],
        ["::/0"],
        ["::ffff:0:0/80", "2001:db8:2::/64"],
        ["::ffff:198.18.0.0/112"],
        ["0.0.0.0/0"],
        ["10.0.0.0/8", "::/1"],
        ["2001:db8::/48", "2001:db8:1::/48", "2001:db8:2::/64", "::ffff:0:0/80", "198.18.2.0/24"],
        [],
    ]

    @Test(arguments: 0..<sets.count)
    func sameAnswersAsCIDRContains(_ n: Int) {
        var set = PrefixSet()
        let cidrs = Self.sets[n].map { CIDR($0)! }
        for c in cidrs { set.insert(c) }
        let m = PrefixMatcher(set)
        #expect(m.isEmpty == cidrs.isEmpty)
        var g = SplitMix(state: UInt64(n) &+ 11)
        var hits = 0
        for i in 0..<20_000 {
            var a: IPAddress
            switch i % 4 {
            case 0: a = IPAddress(v4: 198, 18, UInt8(truncatingIfNeeded: g.next()), UInt8(truncatingIfNeeded: g.next()))
            case 1: a = IPAddress(v4: UInt8(truncatingIfNeeded: g.next()), UInt8(truncatingIfNeeded: g.next()),
                                  UInt8(truncatingIfNeeded: g.next()), UInt8(truncatingIfNeeded: g.next()))
            case 2: a = IPAddress("2001:db8:\(i % 3)::\(String(g.next() & 0xffff, radix: 16))")!
            default:
                let lanes = SIMD2<UInt64>(g.next(), i % 8 == 3 ? g.next() & 0xffff_ffff_0000_ffff : g.next())
                a = IPAddress(bytes: unsafeBitCast(lanes, to: SIMD16<UInt8>.self))
            }
            let expected = cidrs.contains { $0.contains(a) }
            #expect(m.contains(a) == expected, "\(a) in \(Self.sets[n])")
            #expect(set.contains(a) == expected, "PrefixSet: \(a) in \(Self.sets[n])")
            if expected { hits += 1 }
        }
        // The generated addresses exercise both answers wherever the set allows both.
        if !cidrs.isEmpty { #expect(hits > 0) }
    }
}
