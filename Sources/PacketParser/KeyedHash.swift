/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014): a
/// counter stepped by the golden ratio and passed through a multiply-xorshift finaliser. The one
/// copy of the mixer: it seeds the keyed hash below, the lab's generator and the tests' generator,
/// and mixes the few hashes that must be the same on every run (see `mix`).
@frozen
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's state; the seed at first.
    public var state: UInt64

    /// 2^64 / φ, odd: the counter's step.
    public static let golden: UInt64 = 0x9e37_79b9_7f4a_7c15

    /// A generator that starts from `state`.
    @inlinable
    public init(state: UInt64) { self.state = state }

    /// The next 64 random bits.
    @inlinable @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= Self.golden
        return Self.mix(state)
    }

    /// The finaliser alone (Stafford's "Mix13", as SplitMix64 uses it): a bijection of 64-bit
    /// words in which every input bit flips about half of the output bits. Unkeyed, so only for
    /// values nobody can aim at a table slot: a key that an attacker picks goes through `KeyedHash`.
    @inlinable @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// The hash of every table keyed by packet fields (the engine's flow, rate and budget tables, and
/// scoring's sessions, victims and reflectors): addresses and ports are the attacker's choice, so
/// an unkeyed hash lets a flood aim every key at one probe chain (hash flooding). Six secret key
/// words, spread from one seed by SplitMix64, are mixed into the key before each multiply-fold
/// (the 128-bit product's halves xored: the wyhash primitive), so the slots a key lands on cannot
/// be predicted without the seed. Seed it with `randomSeed()` in production; tests pass a fixed one.
@frozen
public struct KeyedHash: Sendable {
    @usableFromInline let k0: UInt64, k1: UInt64, k2: UInt64, k3: UInt64, k4: UInt64, k5: UInt64

    /// The key words spread from `seed`.
    @inlinable
    public init(_ seed: UInt64) {
        var g = SplitMix64(state: seed)
        k0 = g.next(); k1 = g.next(); k2 = g.next(); k3 = g.next(); k4 = g.next(); k5 = g.next()
    }

    /// A seed from the system's random source (getrandom), for one process's tables.
    public static func randomSeed() -> UInt64 {
        var g = SystemRandomNumberGenerator()
        return g.next()
    }

    /// Multiply-fold: the high and low halves of the 128-bit product, xored.
    @inlinable @inline(__always)
    public static func fold(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let r = a.multipliedFullWidth(by: b)
        return r.high ^ r.low
    }

    /// Two 128-bit values (two addresses, as two 64-bit lanes each) and 64 more bits (the ports).
    @inlinable @inline(__always)
    public func hash(_ a0: UInt64, _ a1: UInt64, _ b0: UInt64, _ b1: UInt64, _ extra: UInt64) -> UInt64 {
        let h = Self.fold(a0 ^ k0, a1 ^ k1) ^ Self.fold(b0 ^ k2, b1 ^ k3)
        return Self.fold(h ^ extra ^ k4, k5)
    }

    /// One 128-bit value (an address, as two 64-bit lanes).
    @inlinable @inline(__always)
    public func hash(_ a0: UInt64, _ a1: UInt64) -> UInt64 {
        Self.fold(Self.fold(a0 ^ k0, a1 ^ k1) ^ k4, k5)
    }

    /// Two addresses' bytes and 64 more bits: the same value as the lanes form.
    @inlinable @inline(__always)
    public func hash(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>, _ extra: UInt64) -> UInt64 {
        let x = unsafeBitCast(a, to: SIMD2<UInt64>.self)
        let y = unsafeBitCast(b, to: SIMD2<UInt64>.self)
        return hash(x[0], x[1], y[0], y[1], extra)
    }

    /// One address's bytes: the same value as the lanes form.
    @inlinable @inline(__always)
    public func hash(_ a: SIMD16<UInt8>) -> UInt64 {
        let x = unsafeBitCast(a, to: SIMD2<UInt64>.self)
        return hash(x[0], x[1])
    }
}
