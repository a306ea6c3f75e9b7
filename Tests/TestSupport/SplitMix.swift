/// SplitMix64: a small deterministic generator for the randomized tests, so a failure reproduces
/// from its seed.
public struct SplitMix: RandomNumberGenerator {
    /// The generator's state; the seed at first.
    public var state: UInt64

    /// A generator that starts from `state`.
    public init(state: UInt64) { self.state = state }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// A number in `0..<n` (`n` > 0), by remainder.
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// A random byte: the low 8 bits of `next()`.
    public mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}
