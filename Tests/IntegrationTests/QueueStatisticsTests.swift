import NFQueue
import Testing

/// The /proc/net/netfilter/nfnetlink_queue rows the metrics export, parsed from the kernel's text.
@Test func procQueueRowsParse() {
    // Columns: queue, portid, queue_total, copy_mode, copy_range, queue_dropped, user_dropped,
    // id_sequence, 1 (as printed by this 6.x kernel, right-aligned).
    let text = """
            0  22826     3 2   256     7     9    12345  1
        65535 4294967295 0 2 256 0 0 18446744073709551615 1
        garbage line
        """
    let rows = QueueStatistics.parse(text)
    #expect(rows.count == 2)
    #expect(rows.first == QueueStatistics(queue: 0, portID: 22826, queueTotal: 3, copyMode: 2, copyRange: 256,
                                          queueDropped: 7, userDropped: 9, idSequence: 12345))
    #expect(rows.last?.queue == 65535)
    #expect(rows.last?.idSequence == .max)
}

@Test func queueConfigurationSizesTheBufferWithTheQueue() {
    var c = QueueConfiguration(queue: 3)
    c.maxLength = 1000
    #expect(c.effectiveReceiveBufferBytes == 1000 * QueueConfiguration.bytesPerQueuedPacket)
    c.receiveBufferBytes = 1 << 20
    #expect(c.effectiveReceiveBufferBytes == 1 << 20)
    // The copy range holds IPv6 with extension headers plus a full TCP header.
    #expect(QueueConfiguration(queue: 0).copyRange >= 40 + 136 + 60)
}
