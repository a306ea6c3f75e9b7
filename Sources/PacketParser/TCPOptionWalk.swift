/// Folds TCP options (RFC 9293 §3.2, RFC 7323, RFC 2018) into a `TCPOptionSignature`.
@usableFromInline
enum TCPOptionWalk {
    /// `count` bytes of options at `p` (what was captured of them). Returns the signature and
    /// whether the options were whole: false when an option's length byte is missing, below 2, or
    /// runs past the bytes given (tshark: "option goes past end of options").
    @usableFromInline
    static func signature(_ p: UnsafeRawPointer, count: Int) -> (TCPOptionSignature, Bool) {
        var raw: UInt32 = 0
        var slot: UInt32 = 0
        var i = 0
        while i < count {
            let kind = byte(p, i)
            if kind == 0 { break }              // end of option list
            if kind == 1 { i += 1; continue }   // NOP padding takes no slot
            guard i + 1 < count else { return (TCPOptionSignature(rawValue: raw), false) }
            let length = Int(byte(p, i + 1))
            guard length >= 2, i + length <= count else { return (TCPOptionSignature(rawValue: raw), false) }
            var code: UInt32 = 0
            switch kind {
            case 2 where length == 4:
                raw = raw & ~0xffff | UInt32(be16(p, i + 2)) | 1 << 22
                code = 1
            case 3 where length == 3:
                // RFC 7323 §2.3: a shift above 14 is used as 14.
                let shift = UInt32(min(byte(p, i + 2), 14))
                raw = raw & ~(0xf << 16) | (shift + 1) << 16
                code = 2
            case 4 where length == 2:
                raw |= 1 << 20
                code = 2
            case 8 where length == 10:
                raw |= 1 << 21
                code = 3
            default:
                code = 0
            }
            if slot < 4 {
                raw |= code << (24 + 2 * slot)
                slot += 1
            }
            i += length
        }
        return (TCPOptionSignature(rawValue: raw), true)
    }
}
