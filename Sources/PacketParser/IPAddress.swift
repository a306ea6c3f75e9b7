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

    /// The 16 bytes as two 64-bit lanes (little-endian loads), the form prefix matching and
    /// equality compare in: a whole-vector `==` on `SIMD16` compiles to a lane-by-lane loop.
    @inlinable @inline(__always)
    public var lanes: SIMD2<UInt64> { unsafeBitCast(bytes, to: SIMD2<UInt64>.self) }

    /// Whether `lanes` are an IPv4-mapped address (`::ffff:0:0/96`), written with literal
    /// constants: a `static let` mask costs a `swift_once` call per use (callgrind).
    @inlinable @inline(__always)
    public static func lanesAreV4(_ x: SIMD2<UInt64>) -> Bool {
        // Little-endian lanes: bytes 10 and 11 (0xff 0xff) are bits 16-31 of lane 1.
        x[0] == 0 && x[1] & 0xffff_ffff == 0xffff_0000
    }

    /// The IPv4 address in host order, for an IPv4-mapped address.
    public var v4Value: UInt32 {
        UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
    }

    /// Parses dotted-quad IPv4 or RFC 5952 / RFC 4291 IPv6 text. Returns nil on anything else,
    /// `init(parsing:)` says why.
    public init?(_ text: Substring) {
        guard let a = try? IPAddress(parsing: text) else { return nil }
        self = a
    }

    public init?(_ text: String) { self.init(Substring(text)) }

    /// Parses an address the way nft reads it, or refuses what nft would read otherwise.
    ///
    /// nft 1.0.6 hands IPv4 text to getaddrinfo(), which takes inet_aton's legacy forms: an octet
    /// with a leading zero is octal (`198.18.2.010` loads as 198.18.2.8), `08` is not a number and
    /// is looked up as a host name, and a bare number (`3323068938`, `0x0a000001`) is a whole
    /// address. Checked with `nft -f` and `nft list` on Linux 6.18. Guessing either reading would
    /// leave the agent and the kernel protecting different hosts, so every multi-digit octet that
    /// starts with `0` is refused ("0" alone is fine), as are the bare-number forms. In IPv6 text
    /// nft uses inet_pton(): hex groups mean the same to both, a zone index (`%eth0`) is a syntax
    /// error there, and an embedded IPv4 part with a leading zero fails, so it is refused here too.
    public init(parsing text: Substring) throws(AddressSyntaxError) {
        if text.contains(":") {
            self.init(bytes: try IPAddress.parseIPv6(text))
        } else {
            let v = try IPAddress.parseIPv4(text)
            self.init(v4: v[0], v[1], v[2], v[3])
        }
    }

    private static func parseIPv4(_ text: Substring) throws(AddressSyntaxError) -> [UInt8] {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else {
            throw AddressSyntaxError("'\(text)' is not an IPv4 address (four decimal octets a.b.c.d)")
        }
        var out = [UInt8]()
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let v = UInt8(p) else {
                throw AddressSyntaxError("'\(text)' is not an IPv4 address: octet '\(p)' is not a number from 0 to 255")
            }
            guard p.count == 1 || p.first != "0" else {
                throw AddressSyntaxError("'\(text)': octet '\(p)' has a leading zero, which nft reads as octal")
            }
            out.append(v)
        }
        return out
    }

    private static func parseIPv6(_ text: Substring) throws(AddressSyntaxError) -> SIMD16<UInt8> {
        if let zone = text.firstIndex(of: "%") {
            throw AddressSyntaxError("'\(text)': nft takes no zone index ('\(text[zone...])')")
        }
        let bad = AddressSyntaxError("'\(text)' is not an IPv6 address")
        // Split on "::" at most once; each side is a list of 16-bit groups, the last of which
        // may be an embedded dotted-quad IPv4 address.
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { throw bad }
        func groups(_ s: String) throws(AddressSyntaxError) -> [UInt16] {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, p) in parts.enumerated() {
                if i == parts.count - 1, p.contains(".") {
                    let v4 = try parseIPv4(p)
                    out.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    out.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                    continue
                }
                // Hex digits only: UInt16(_:radix:) would also take a sign ("+1"), inet_pton none.
                guard !p.isEmpty, p.count <= 4, p.allSatisfy({ $0.isHexDigit && $0.isASCII }),
                      let g = UInt16(p, radix: 16) else { throw bad }
                out.append(g)
            }
            return out
        }
        let head = try groups(halves[0])
        var all: [UInt16]
        if halves.count == 2 {
            let tail = try groups(halves[1])
            guard head.count + tail.count <= 7 else { throw bad }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { throw bad }
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

/// Why a text is not an address (or prefix) ReflectGuard and nft read alike.
public struct AddressSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
