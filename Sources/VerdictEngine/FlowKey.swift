import PacketParser

/// Keys of the engine's tables, hashed with per-process secret keys (`HashSeed`) so that nobody
/// outside can aim traffic at one group and push real entries out (hash flooding).
struct HashSeed {
    let k: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    init(_ seed: UInt64) {
        // splitmix64: spreads one seed word into independent key words.
        var s = seed
        func next() -> UInt64 {
            s &+= 0x9e37_79b9_7f4a_7c15
            var z = s
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        k = (next(), next(), next(), next(), next(), next())
    }

    /// Multiply-fold: the 128-bit product's halves xored (the wyhash primitive).
    @inline(__always)
    static func fold(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let r = a.multipliedFullWidth(by: b)
        return r.high ^ r.low
    }

    @inline(__always)
    func hash(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>, _ extra: UInt64) -> UInt64 {
        let x = unsafeBitCast(a, to: SIMD2<UInt64>.self)
        let y = unsafeBitCast(b, to: SIMD2<UInt64>.self)
        let h = HashSeed.fold(x[0] ^ k.0, x[1] ^ k.1) ^ HashSeed.fold(y[0] ^ k.2, y[1] ^ k.3)
        return HashSeed.fold(h ^ extra ^ k.4, k.5)
    }

    @inline(__always)
    func hash(_ a: SIMD16<UInt8>) -> UInt64 {
        let x = unsafeBitCast(a, to: SIMD2<UInt64>.self)
        return HashSeed.fold(HashSeed.fold(x[0] ^ k.0, x[1] ^ k.1) ^ k.4, k.5)
    }
}

/// A TCP connection's 4-tuple in canonical order: endpoint 0 is the lower (address, port) in an
/// arbitrary total order, so both directions of a flow find the same entry with one lookup.
struct FlowKey {
    var a0: SIMD16<UInt8>
    var a1: SIMD16<UInt8>
    var p0: UInt16
    var p1: UInt16

    /// The key of `packet`'s flow, and whether the packet's sender is endpoint 0.
    @inline(__always)
    init(_ packet: ParsedPacket, senderIs0: inout Bool) {
        let s = unsafeBitCast(packet.source.bytes, to: SIMD2<UInt64>.self)
        let d = unsafeBitCast(packet.destination.bytes, to: SIMD2<UInt64>.self)
        let sLow: Bool
        if s[0] != d[0] { sLow = s[0] < d[0] }
        else if s[1] != d[1] { sLow = s[1] < d[1] }
        else { sLow = packet.sourcePort <= packet.destinationPort }
        senderIs0 = sLow
        if sLow {
            a0 = packet.source.bytes; a1 = packet.destination.bytes
            p0 = packet.sourcePort; p1 = packet.destinationPort
        } else {
            a0 = packet.destination.bytes; a1 = packet.source.bytes
            p0 = packet.destinationPort; p1 = packet.sourcePort
        }
    }

    @inline(__always)
    func hash(_ seed: HashSeed) -> UInt64 {
        seed.hash(a0, a1, UInt64(p0) << 16 | UInt64(p1))
    }
}

/// Same 16 bytes, same 2 ports: one vector compare per address.
@inline(__always)
func sameBytes(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> Bool {
    let x = unsafeBitCast(a, to: SIMD2<UInt64>.self)
    let y = unsafeBitCast(b, to: SIMD2<UInt64>.self)
    let d = x ^ y
    return d[0] | d[1] == 0
}
