import Foundation

/// Writes pcapng files byte by byte, in either byte order, with any block the format has (and
/// malformed ones on purpose): what the reader tests, the tshark comparison and the fuzz seeds
/// build their captures with. Plain bytes; tshark or the reader under test judges them.
public struct PcapngBuilder {
    public private(set) var bytes: [UInt8] = []
    public let bigEndian: Bool

    public init(bigEndian: Bool = false) { self.bigEndian = bigEndian }

    public func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: bigEndian ? v.bigEndian : v.littleEndian, Array.init) }
    public func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: bigEndian ? v.bigEndian : v.littleEndian, Array.init) }
    public func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: bigEndian ? v.bigEndian : v.littleEndian, Array.init) }

    public static func padded(_ b: [UInt8]) -> [UInt8] { b + [UInt8](repeating: 0, count: (4 - b.count % 4) % 4) }

    /// A whole block: type, total length, body (padded), total length again.
    public func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
        let body = Self.padded(body)
        let length = UInt32(12 + body.count)
        return u32(type) + u32(length) + body + u32(length)
    }

    /// An option: code, length, value padded to 32 bits.
    public func option(_ code: UInt16, _ value: [UInt8]) -> [UInt8] {
        u16(code) + u16(UInt16(value.count)) + Self.padded(value)
    }

    public mutating func append(_ raw: [UInt8]) { bytes += raw }

    /// A section header block (this builder's byte order), with an application option.
    public mutating func section() {
        append(block(0x0A0D_0D0A, u32(0x1A2B_3C4D) + u16(1) + u16(0) + u64(.max)
                     + option(4, Array("reflectguard tests".utf8)) + u32(0)))
    }

    /// An interface description block. `resolution`: if_tsresol's byte (nil: the default, µs);
    /// `offset`: if_tsoffset in seconds.
    public mutating func interface(linktype: UInt16, snapLength: UInt32 = 0, resolution: UInt8? = nil, offset: Int64? = nil,
                                   name: String? = nil) {
        var options: [UInt8] = []
        if let name { options += option(2, Array(name.utf8)) }
        if let resolution { options += option(9, [resolution]) }
        if let offset { options += option(14, u64(UInt64(bitPattern: offset))) }
        if !options.isEmpty { options += u32(0) }
        append(block(1, u16(linktype) + u16(0) + u32(snapLength) + options))
    }

    /// An enhanced packet block; `units` is the raw 64-bit timestamp in the interface's units.
    public mutating func enhanced(interface: UInt32, units: UInt64, data: [UInt8], originalLength: Int? = nil,
                                  comment: String? = nil) {
        var body = u32(interface) + u32(UInt32(units >> 32)) + u32(UInt32(units & 0xffff_ffff))
            + u32(UInt32(data.count)) + u32(UInt32(originalLength ?? data.count)) + Self.padded(data)
        if let comment { body += option(1, Array(comment.utf8)) + u32(0) }
        append(block(6, body))
    }

    /// A simple packet block (interface 0, no timestamp).
    public mutating func simple(data: [UInt8], originalLength: Int? = nil) {
        append(block(3, u32(UInt32(originalLength ?? data.count)) + Self.padded(data)))
    }

    /// The obsolete packet block (type 2): 16-bit interface id and drop count.
    public mutating func obsolete(interface: UInt16, units: UInt64, data: [UInt8]) {
        append(block(2, u16(interface) + u16(0) + u32(UInt32(units >> 32)) + u32(UInt32(units & 0xffff_ffff))
                     + u32(UInt32(data.count)) + u32(UInt32(data.count)) + Self.padded(data)))
    }

    /// The blocks a reader must skip: name resolution, interface statistics, decryption secrets,
    /// a custom block and an unknown type.
    public mutating func otherBlocks() {
        append(block(4, u16(1) + u16(8) + [198, 18, 2, 2] + Array("h1\0\0".utf8) + u16(0) + u16(0)))
        append(block(5, u32(0) + u32(0) + u32(1000)))
        append(block(10, u32(0x544c_534b) + u32(12) + Array("CLIENT_RANDO".utf8)))
        append(block(0x0000_0BAD, u32(32473) + [1, 2, 3, 4, 5]))
        append(block(0x0FFF_0001, [UInt8](repeating: 0xab, count: 40)))
    }

    public func write(to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}
