import PacketParser

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
    func hash(_ seed: KeyedHash) -> UInt64 {
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
