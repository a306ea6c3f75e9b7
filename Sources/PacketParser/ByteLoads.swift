/// Big-endian loads from a raw pointer. Callers check the bounds first (every read in the parsers
/// is preceded by a length guard); these only spell the byte order once.
@usableFromInline @inline(__always)
func be16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
    UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

@usableFromInline @inline(__always)
func be32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
    UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@usableFromInline @inline(__always)
func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
}

/// The IPv4-mapped address of the four bytes at `offset`, built as one vector: the loaded word
/// keeps its memory (network) order in lane 3, so no byte swap is needed.
@usableFromInline @inline(__always)
func mappedIPv4(_ p: UnsafeRawPointer, _ offset: Int) -> IPAddress {
    let word = p.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
    let lanes = SIMD4<UInt32>(0, 0, UInt32(bigEndian: 0x0000_ffff), word)
    return IPAddress(bytes: unsafeBitCast(lanes, to: SIMD16<UInt8>.self))
}

@usableFromInline @inline(__always)
func ipv6Address(_ p: UnsafeRawPointer, _ offset: Int) -> IPAddress {
    IPAddress(bytes: p.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt8>.self))
}

/// EtherType / protocol numbers the link layers hand over.
@usableFromInline enum EtherType {
    @usableFromInline static let ipv4: UInt16 = 0x0800
    @usableFromInline static let ipv6: UInt16 = 0x86dd
    /// 802.1Q customer tag, 802.1ad service tag, and the pre-standard QinQ tag some switches send.
    @usableFromInline static let vlan: UInt16 = 0x8100
    @usableFromInline static let qinq: UInt16 = 0x88a8
    @usableFromInline static let qinqLegacy: UInt16 = 0x9100
}

/// IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers").
@usableFromInline enum IPProto {
    @usableFromInline static let hopByHop: UInt8 = 0
    @usableFromInline static let tcp: UInt8 = 6
    @usableFromInline static let routing: UInt8 = 43
    @usableFromInline static let fragment: UInt8 = 44
    @usableFromInline static let esp: UInt8 = 50
    @usableFromInline static let ah: UInt8 = 51
    @usableFromInline static let noNextHeader: UInt8 = 59
    @usableFromInline static let destinationOptions: UInt8 = 60
}
