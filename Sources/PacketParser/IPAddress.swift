/// An IPv4 or IPv6 address as one 16-byte vector, network byte order.
///
/// IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), so comparisons, hashing and
/// prefix checks need no branch on the family.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: SIMD16<UInt8>

    public init(bytes: SIMD16<UInt8>) { self.bytes = bytes }

    public static let zero = IPAddress(bytes: SIMD16<UInt8>())

    private static let v4MappedPrefix = SIMD16<UInt8>(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0)
    private static let v4PrefixMask = SIMD16<UInt8>(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                    0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)

    /// An IPv4 address from its four bytes in network order.
    public init(v4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        bytes = SIMD16<UInt8>(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d)
    }

    /// An IPv4 address from a host-order 32-bit value.
    public init(v4 value: UInt32) {
        self.init(v4: UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                  UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value))
    }

    public var isIPv4Mapped: Bool { (bytes & IPAddress.v4PrefixMask) == IPAddress.v4MappedPrefix }

    /// The IPv4 address in host order, for an IPv4-mapped address.
    public var v4Value: UInt32 {
        UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
    }

    /// Parses dotted-quad IPv4 or RFC 5952 / RFC 4291 IPv6 text. Returns nil on anything else.
    public init?(_ text: Substring) {
        if text.contains(":") {
            guard let b = IPAddress.parseIPv6(text) else { return nil }
            self.init(bytes: b)
        } else {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            var out = [UInt8]()
            for p in parts {
                guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }),
                      let v = UInt8(p) else { return nil }
                out.append(v)
            }
            self.init(v4: out[0], out[1], out[2], out[3])
        }
    }

    public init?(_ text: String) { self.init(Substring(text)) }

    private static func parseIPv6(_ text: Substring) -> SIMD16<UInt8>? {
        // Split on "::" at most once; each side is a list of 16-bit groups, the last of which
        // may be an embedded dotted-quad IPv4 address.
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, p) in parts.enumerated() {
                if i == parts.count - 1, p.contains(".") {
                    guard let v4 = IPAddress(p), v4.isIPv4Mapped else { return nil }
                    let v = v4.v4Value
                    out.append(UInt16(truncatingIfNeeded: v >> 16))
                    out.append(UInt16(truncatingIfNeeded: v))
                    continue
                }
                guard !p.isEmpty, p.count <= 4, let g = UInt16(p, radix: 16) else { return nil }
                out.append(g)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count <= 7 else { return nil }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        var v = SIMD16<UInt8>()
        for (i, g) in all.enumerated() {
            v[2 * i] = UInt8(g >> 8)
            v[2 * i + 1] = UInt8(g & 0xff)
        }
        return v
    }

    public var description: String {
        if isIPv4Mapped {
            return "\(bytes[12]).\(bytes[13]).\(bytes[14]).\(bytes[15])"
        }
        var groups = [UInt16]()
        for i in 0..<8 { groups.append(UInt16(bytes[2 * i]) << 8 | UInt16(bytes[2 * i + 1])) }
        // RFC 5952: compress the longest run (length ≥ 2) of zero groups, the first one on ties.
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ r: ArraySlice<UInt16>) -> String { r.map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(groups[...]) }
        return hex(groups[0..<bestStart]) + "::" + hex(groups[(bestStart + bestLen)...])
    }
}
