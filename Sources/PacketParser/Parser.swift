/// Entry points of the header parser. The fast path (`PacketParser.parse`) tries a SIMD
/// classification of the common cases first and falls back to the general path; the scalar
/// reference (`ScalarParser.parse`) is written for clarity and is the oracle the tests compare
/// the fast path against. Both give identical results on every input.
public enum PacketParser {
    /// Decodes `bytes` (starting at the header `link` names) into `packet`, resetting it first.
    /// Never reads outside `bytes`; never allocates.
    public static func parse(_ bytes: UnsafeRawBufferPointer, link: LinkType, into packet: inout ParsedPacket) {
        packet = ParsedPacket()
        guard let p = bytes.baseAddress, bytes.count > 0 else {
            packet.malformed = link.startsAtNetworkLayer ? .truncatedIP : .truncatedLink
            return
        }
        if FastPath.parse(p, count: bytes.count, link: link, into: &packet) { return }
        // The fast path may have written fields before giving up: start the general path clean.
        packet = ParsedPacket()
        ScalarParser.parse(p, count: bytes.count, link: link, into: &packet)
    }

    /// The fast path with its header checks done byte by byte instead of by vector compares, then
    /// the scalar path as usual. Same results; it exists so the benchmark can show what the SIMD
    /// classification itself is worth.
    public static func parseWithoutSIMD(_ bytes: UnsafeRawBufferPointer, link: LinkType,
                                        into packet: inout ParsedPacket) {
        packet = ParsedPacket()
        guard let p = bytes.baseAddress, bytes.count > 0 else {
            packet.malformed = link.startsAtNetworkLayer ? .truncatedIP : .truncatedLink
            return
        }
        if FastPath.parseWithoutSIMD(p, count: bytes.count, link: link, into: &packet) { return }
        packet = ParsedPacket()
        ScalarParser.parse(p, count: bytes.count, link: link, into: &packet)
    }

    /// Convenience for tests and tools: parse an array.
    public static func parse(_ bytes: [UInt8], link: LinkType) -> ParsedPacket {
        var p = ParsedPacket()
        bytes.withUnsafeBytes { parse($0, link: link, into: &p) }
        return p
    }
}

