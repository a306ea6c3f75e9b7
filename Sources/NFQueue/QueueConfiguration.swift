/// How one NFQUEUE queue is bound and sized.
public struct QueueConfiguration: Sendable, Equatable {
    public var queue: UInt16
    /// Bytes of each packet copied to userspace (NFQNL_COPY_PACKET range). 256 covers the header
    /// stacks real traffic carries: IPv6's 40 bytes plus ordinary extension headers (hop-by-hop,
    /// routing, fragment, destination options: typically ≤ 136 bytes together) plus a full 60-byte
    /// TCP header with options; IPv4 needs at most 60 + 60. No range is enough for a spoofer, who
    /// can pad a Destination Options header up to the MTU: the engine drops a queued packet whose
    /// TCP header lies past the copy (`unreadable-header`), so a larger range would only cost
    /// netlink bandwidth and socket buffer (`bytesPerQueuedPacket`). The engine never reads payload.
    public var copyRange: UInt32 = 256
    /// The kernel's queue length (NFQA_CFG_QUEUE_MAXLEN): packets waiting for a verdict. Beyond it
    /// FAIL_OPEN accepts (no kernel counter sees those) and kernel enforcement must take over.
    public var maxLength: UInt32 = 4096
    /// Socket receive buffer. Sized with `maxLength`: a full queue's worth of messages must fit in
    /// the socket, or the kernel loses them in netlink (`user_dropped`) before the queue is full.
    /// nil derives it from `maxLength` × `bytesPerQueuedPacket`.
    public var receiveBufferBytes: Int? = nil
    /// What one queued packet costs in the socket buffer: the skb's truesize, not the message
    /// length. A 256-byte copy gives a ~420-byte message in a 1 KiB data area plus ~700 bytes of
    /// skb overhead; 2 KiB each leaves headroom for acks and error messages.
    public static let bytesPerQueuedPacket = 2048
    /// Messages taken per receive system call (recvmmsg slots).
    public var receiveBatch: Int = 64
    /// Kernel features asked for. FAIL_OPEN keeps the router forwarding when the queue is full;
    /// GSO lets the kernel queue GSO packets without segmenting them first (we copy headers only).
    public var failOpen = true
    public var gso = true

    public init(queue: UInt16) { self.queue = queue }

    public var effectiveReceiveBufferBytes: Int {
        receiveBufferBytes ?? Int(maxLength) * Self.bytesPerQueuedPacket
    }
}
