#if canImport(Glibc)
import Glibc
#endif
import PacketParser

/// The scenario generator's own seeded PRNG: xoshiro256** seeded through SplitMix64 (Blackman and
/// Vigna's recommended seeding). Foundation's and the stdlib's generators are not reproducible
/// across runs, and a scenario must be byte-identical for a given seed.
public struct LabRandom {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var sm = SplitMix64(state: seed)
        s0 = sm.next(); s1 = sm.next(); s2 = sm.next(); s3 = sm.next()
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    public mutating func next32() -> UInt32 { UInt32(truncatingIfNeeded: next() >> 32) }

    /// Uniform in 0..<n (Lemire's multiply-shift; the tiny bias is irrelevant for traffic shapes).
    @inline(__always)
    public mutating func below(_ n: UInt64) -> UInt64 {
        next().multipliedFullWidth(by: n).high
    }

    public mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(below(UInt64(range.upperBound - range.lowerBound) + 1))
    }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    public mutating func chance(_ p: Double) -> Bool { unit() < p }

    public mutating func exponential(mean: Double) -> Double { -mean * log(1 - unit()) }

    /// Index drawn from cumulative-free weights.
    public mutating func weighted(_ weights: [Double]) -> Int {
        var total = 0.0
        for w in weights { total += w }
        var x = unit() * total
        for (i, w) in weights.enumerated() {
            if x < w { return i }
            x -= w
        }
        return weights.count - 1
    }
}
