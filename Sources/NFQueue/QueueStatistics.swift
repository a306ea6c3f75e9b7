#if canImport(Glibc)
import Glibc
#endif

/// One row of /proc/net/netfilter/nfnetlink_queue: the kernel's own view of a queue.
public struct QueueStatistics: Sendable, Equatable {
    public var queue: UInt16
    public var portID: UInt32
    /// Packets waiting for a verdict right now.
    public var queueTotal: UInt64
    public var copyMode: UInt8
    public var copyRange: UInt32
    /// Packets dropped (or, with FAIL_OPEN, accepted unseen) because the queue was full.
    public var queueDropped: UInt64
    /// Packets lost in netlink (our socket buffer overran).
    public var userDropped: UInt64
    /// The last packet id handed out: how many packets the queue has seen.
    public var idSequence: UInt64

    public init(queue: UInt16, portID: UInt32, queueTotal: UInt64, copyMode: UInt8, copyRange: UInt32,
                queueDropped: UInt64, userDropped: UInt64, idSequence: UInt64) {
        self.queue = queue; self.portID = portID; self.queueTotal = queueTotal; self.copyMode = copyMode
        self.copyRange = copyRange; self.queueDropped = queueDropped; self.userDropped = userDropped
        self.idSequence = idSequence
    }

    /// Parses the file's text; rows that do not have the nine columns are skipped.
    public static func parse(_ text: String) -> [QueueStatistics] {
        var rows: [QueueStatistics] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 8, let q = UInt16(f[0]), let port = UInt32(f[1]), let total = UInt64(f[2]),
                  let mode = UInt8(f[3]), let range = UInt32(f[4]), let qd = UInt64(f[5]),
                  let ud = UInt64(f[6]), let seq = UInt64(f[7]) else { continue }
            rows.append(QueueStatistics(queue: q, portID: port, queueTotal: total, copyMode: mode,
                                        copyRange: range, queueDropped: qd, userDropped: ud, idSequence: seq))
        }
        return rows
    }

    public static let path = "/proc/net/netfilter/nfnetlink_queue"

    /// Reads the current figures (empty when the file is absent: no queue bound in this netns).
    public static func read(path: String = QueueStatistics.path) -> [QueueStatistics] {
        // One row per queue, ~80 bytes each: 1 MiB is 65,536 queues' worth.
        guard let bytes = try? readFile(path, limit: 1 << 20) else { return [] }
        return parse(String(decoding: bytes, as: UTF8.self))
    }
}
