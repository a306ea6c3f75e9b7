import PacketParser

/// SplitMix64 for the randomized tests, so a failure reproduces from its seed: the package's one
/// generator (`PacketParser.SplitMix64`) with the two draws the tests use.
public typealias SplitMix = SplitMix64

extension SplitMix64 {
    /// A number in `0..<n` (`n` > 0), by remainder.
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// A random byte: the low 8 bits of `next()`.
    public mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}
