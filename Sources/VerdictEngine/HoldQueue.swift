import PacketParser

/// SYN-ACKs whose verdict waits for their conntrack state (`state = conntrack`, `ct_wait`), in
/// arrival order, bounded. The kernel queue delivers packets with increasing ids, so the oldest
/// held packet has the lowest id: what `VerdictBatcher` must not batch past.
///
/// Fixed capacity, allocated once. When full, holding one more settles the oldest at once (it has
/// waited longest): under a flood every held packet waits `capacity / rate` at most, which still
/// covers replication's usual delay (p50 0.4 ms) at rates far above what a queue takes, and the
/// kernel queue always keeps room for packets still to come.
///
/// `~Copyable`: a copy would hold the same packets twice, and each held packet must get exactly
/// one verdict.
public struct HoldQueue: ~Copyable {
    public struct Held {
        /// The kernel queue's packet id; nil when nothing waits on it (dry-run: the packet was
        /// accepted at once, only its decision waits).
        public var id: UInt32?
        public var packet: ParsedPacket
        public var heldAt: Nanoseconds

        public init(id: UInt32?, packet: ParsedPacket, heldAt: Nanoseconds) {
            self.id = id; self.packet = packet; self.heldAt = heldAt
        }
    }

    public let capacity: Int
    private let ring: OwnedBuffer<Held?>
    private var head = 0
    /// Slots from `head` on, settled ones included (a packet settled early leaves a hole that
    /// `compact` skips once it reaches the head).
    private var span = 0
    public private(set) var count = 0

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        ring = OwnedBuffer(repeating: nil, count: self.capacity)
    }

    public var isEmpty: Bool { count == 0 }

    /// The oldest held packet, if any.
    public var oldest: Held? {
        var i = 0
        while i < span {
            if let h = ring[(head + i) % capacity] { return h }
            i += 1
        }
        return nil
    }

    /// The lowest queue id still held (the batcher may batch only below it).
    public var oldestID: UInt32? {
        var i = 0
        while i < span {
            if let h = ring[(head + i) % capacity], let id = h.id { return id }
            i += 1
        }
        return nil
    }

    /// Holds a packet; returns the one that had to leave to make room (settle it now), if any.
    public mutating func hold(_ h: Held) -> Held? {
        var out: Held? = nil
        if span == capacity {
            out = ring[head]
            ring[head] = nil
            if out != nil { count -= 1 }
            head = (head + 1) % capacity
            span -= 1
            compact()
        }
        ring[(head + span) % capacity] = h
        span += 1
        count += 1
        return out
    }

    /// Removes and returns, oldest first, the held packets that have waited `wait` or more.
    public mutating func takeExpired(at now: Nanoseconds, wait: Nanoseconds, into out: inout [Held]) {
        while span > 0 {
            guard let h = ring[head] else { head = (head + 1) % capacity; span -= 1; continue }
            guard now - h.heldAt >= wait else { return }
            out.append(h)
            ring[head] = nil
            count -= 1
            head = (head + 1) % capacity
            span -= 1
        }
    }

    /// Offers every held packet to `settle`, oldest first; those it settles (returns true for) leave.
    public mutating func recheck(_ settle: (Held) -> Bool) {
        var i = 0
        while i < span {
            let at = (head + i) % capacity
            if let h = ring[at], settle(h) {
                ring[at] = nil
                count -= 1
            }
            i += 1
        }
        compact()
    }

    /// Removes and returns everything held (shutdown).
    public mutating func takeAll(into out: inout [Held]) {
        takeExpired(at: .max, wait: 0, into: &out)
    }

    private mutating func compact() {
        while span > 0, ring[head] == nil {
            head = (head + 1) % capacity
            span -= 1
        }
    }
}
