/// A compact fingerprint of a TCP header's options, enough to tell one stack's SYN profile from
/// another's (p0f-style, much reduced): which of the options that matter are present, their
/// order, the MSS and the window scale.
///
/// Layout (32 bits): bits 0-15 MSS (0 when absent); bits 16-19 window-scale shift + 1 (0 when
/// absent); bit 20 SACK-permitted; bit 21 timestamps; bit 22 MSS present; bits 24-31 the kinds of
/// the first four options seen, two bits each in order (0 other/NOP-free end, 1 MSS, 2 SACK-perm
/// or window scale, 3 timestamps), which captures the order Linux, Windows and BSD stacks differ in.
/// The first option sits in bits 24-25, the fourth in bits 30-31; NOP and EOL take no slot, and an
/// option whose length is not its RFC length counts as "other" and sets no field.
public struct TCPOptionSignature: Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let none = TCPOptionSignature(rawValue: 0)

    public var mss: UInt16 { UInt16(truncatingIfNeeded: rawValue) }
    public var hasMSS: Bool { rawValue & (1 << 22) != 0 }
    public var windowScale: UInt8? {
        let w = (rawValue >> 16) & 0xf
        return w == 0 ? nil : UInt8(w - 1)
    }
    public var sackPermitted: Bool { rawValue & (1 << 20) != 0 }
    public var timestamps: Bool { rawValue & (1 << 21) != 0 }
    public var order: UInt8 { UInt8(truncatingIfNeeded: rawValue >> 24) }
}
