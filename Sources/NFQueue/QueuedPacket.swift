/// One packet the kernel queued to us, as read from its NFQNL_MSG_PACKET message. The payload
/// points into the receiver's buffer and is valid only until the next receive.
public struct QueuedPacket {
    /// The kernel's packet id: the verdict names it.
    public var id: UInt32 = 0
    /// The copied bytes (at most the copy range), starting at the network header.
    public var payload = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The packet's real length (NFQA_CAP_LEN when the copy was cut, else the payload length).
    public var length: Int = 0
    /// NFQA_TIMESTAMP converted to nanoseconds on CLOCK_REALTIME, or 0 when the kernel sent none.
    public var timestamp: Int64 = 0
    /// NFQA_IFINDEX_INDEV / OUTDEV, 0 when absent (locally generated or locally delivered).
    public var inInterface: UInt32 = 0
    public var outInterface: UInt32 = 0

    /// False for a packet message whose attributes did not parse: only `id` is meaningful and
    /// the packet must be accepted (it cannot be judged, and it must not wait for a later batch).
    public var decoded = true
    /// Internal: the id was readable (the receiver hands only such packets to its caller).
    var idValid = true

    public init() {}

    /// The copy range cut the packet. Harmless while the cut is past the headers (the parser
    /// judges what it got), but worth counting.
    public var isTruncated: Bool { length > payload.count }
}
