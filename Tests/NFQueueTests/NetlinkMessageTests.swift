#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue
import NFQueueTestSupport
import Testing
@testable import NFQueue

/// The messages the queue code writes and reads, against the kernel's struct layouts (read from
/// the C headers through CNetfilterQueue, see `NetlinkLayout`).
@Suite struct NetlinkMessageTests {
    typealias L = NetlinkLayout

    /// The kernel ABI the headers define: these never change, and a Swift or C import that laid
    /// them out otherwise would corrupt every message.
    @Test func theHeadersLayOutTheStructsAsTheKernelABISays() {
        #expect(L.header == 16 && L.lengthAt == 0 && L.typeAt == 4 && L.flagsAt == 6 && L.sequenceAt == 8)
        #expect(L.nfgen == 4 && L.familyAt == 0 && L.versionAt == 1 && L.resIDAt == 2)
        #expect(L.attributeHeader == 4 && L.attributeLengthAt == 0 && L.attributeTypeAt == 2)
        #expect(L.verdictHeader == 8 && L.verdictAt == 0 && L.verdictIDAt == 4)
        #expect(L.packetHeader == 7 && L.packetIDAt == 0 && L.hwProtocolAt == 4 && L.hookAt == 6, "packed: 4 + 2 + 1")
        #expect(L.timestamp == 16 && L.secondsAt == 0 && L.microsecondsAt == 8)
    }

    @Test func aVerdictMessageIsTheSizeTheBatcherReservesForIt() {
        #expect(VerdictBatcher.messageSize == L.header + L.nfgen + L.attributeHeader + L.verdictHeader)
    }

    /// Byte for byte: a drop and an accept batch as the batcher writes them, read at the structs'
    /// offsets, with the queue number in network order in nfgenmsg.res_id.
    @Test func theBatcherWritesVerdictsAtTheKernelsOffsets() throws {
        let t = ScriptedTransport(QueueConfiguration(queue: 0x1234), script: [])
        let b = VerdictBatcher(t, capacity: 4)
        b.record(0x0102_0304, .accept, now: 0)
        b.record(0x0102_0305, .drop, now: 0)
        // Capture the raw bytes too.
        final class Raw: VerdictSocket {
            var bytes: [UInt8] = []
            let queue: UInt16 = 0x1234
            func send(_ m: UnsafeRawBufferPointer) throws(SystemCallError) { bytes += m }
        }
        let raw = Raw()
        let rb = VerdictBatcher(raw, capacity: 4)
        rb.record(0x0102_0304, .accept, now: 0)
        rb.record(0x0102_0305, .drop, now: 0)
        rb.flush()
        b.flush()
        let bytes = raw.bytes
        #expect(bytes.count == 2 * VerdictBatcher.messageSize)
        // First message: NFQNL_MSG_VERDICT_BATCH, accept, up to 0x01020304.
        #expect(bytes.host32(at: L.lengthAt) == UInt32(VerdictBatcher.messageSize))
        #expect(bytes.host16(at: L.typeAt) == L.batchType)
        #expect(bytes.host16(at: L.flagsAt) == UInt16(NLM_F_REQUEST))
        #expect(bytes[L.header + L.familyAt] == UInt8(AF_UNSPEC) && bytes[L.header + L.versionAt] == UInt8(NFNETLINK_V0))
        #expect(Array(bytes[(L.header + L.resIDAt)...].prefix(2)) == [0x12, 0x34], "res_id is the queue, big-endian")
        let attr = L.header + L.nfgen
        #expect(bytes.host16(at: attr + L.attributeLengthAt) == UInt16(L.attributeHeader + L.verdictHeader))
        #expect(bytes.host16(at: attr + L.attributeTypeAt) == UInt16(NFQA_VERDICT_HDR.rawValue))
        let hdr = attr + L.attributeHeader
        #expect(bytes.be32(at: hdr + L.verdictAt) == UInt32(NF_ACCEPT))
        #expect(Array(bytes[(hdr + L.verdictIDAt)...].prefix(4)) == [1, 2, 3, 4], "the id is big-endian")
        // Second: a single NFQNL_MSG_VERDICT drop.
        let second = VerdictBatcher.messageSize
        #expect(bytes.host16(at: second + L.typeAt) == L.verdictType)
        #expect(bytes.be32(at: second + hdr + L.verdictAt) == UInt32(NF_DROP))
        #expect(bytes.be32(at: second + hdr + L.verdictIDAt) == 0x0102_0305)
        // And the decoder the other tests rely on reads the same.
        #expect(try VerdictMessage.decode(bytes) == t.verdicts)
        #expect(t.verdicts == [VerdictMessage(batch: true, queue: 0x1234, verdict: UInt32(NF_ACCEPT), id: 0x0102_0304),
                               VerdictMessage(batch: false, queue: 0x1234, verdict: UInt32(NF_DROP), id: 0x0102_0305)])
    }

    private func receive(_ messages: [PacketMessage], configuration: QueueConfiguration = QueueConfiguration(queue: 3))
        throws -> (PacketReceiver, [QueuedPacket], [[UInt8]]) {
        let t = ScriptedTransport(configuration, script: [messages])
        let r = PacketReceiver(t)
        #expect(try r.receive(wait: false) == .processed(messages.count))
        var got: [QueuedPacket] = [], payloads: [[UInt8]] = []
        r.forEachPacket { got.append($0); payloads.append(Array($0.payload)) }
        return (r, got, payloads)
    }

    /// A packet message built at the kernel's layout comes out as the fields the kernel meant.
    @Test func theReceiverReadsEveryAttributeOfAPacketMessage() throws {
        var m = PacketMessage(id: 0xdead_beef, payload: Array(0..<60))
        m.length = 1500
        m.seconds = 1_700_000_000
        m.microseconds = 250_000
        m.inInterface = 4
        m.outInterface = 9
        let (r, got, payloads) = try receive([m, PacketMessage(id: 0xdead_bef0)])
        #expect(got.count == 2)
        let p = try #require(got.first)
        #expect(p.decoded && p.id == 0xdead_beef)
        #expect(payloads[0] == Array(0..<60))
        #expect(p.length == 1500 && p.isTruncated, "NFQA_CAP_LEN is the real length")
        #expect(p.timestamp == 1_700_000_000 * 1_000_000_000 + 250_000_000)
        #expect(p.inInterface == 4 && p.outInterface == 9)
        let q = got[1]
        #expect(q.decoded && q.id == 0xdead_bef0 && q.length == 40 && !q.isTruncated)
        #expect(q.timestamp == 0 && q.inInterface == 0 && q.outInterface == 0, "absent attributes read as 0")
        #expect(r.netlinkErrors == 0 && r.undecodedPackets == 0 && r.truncatedMessages == 0)
    }

    /// A message whose attributes break after a whole NFQA_PACKET_HDR: handed on undecoded with
    /// its id (the caller accepts it at once); one whose header is cut: counted, not handed on.
    @Test func aBrokenMessageKeepsItsIDWhenTheHeaderWasWhole() throws {
        var bad = PacketMessage(id: 77).bytes
        // After the payload, an NFQA_CAP_LEN of 2 bytes: libnetfilter_queue validates it as a u32
        // and fails the whole parse, after NFQA_PACKET_HDR was read.
        var capLen = [UInt8](repeating: 0, count: L.align(L.attributeHeader + 2))
        capLen.putHost16(UInt16(L.attributeHeader + 2), at: L.attributeLengthAt)
        capLen.putHost16(UInt16(NFQA_CAP_LEN.rawValue), at: L.attributeTypeAt)
        bad += capLen
        bad.putHost32(UInt32(bad.count), at: L.lengthAt)
        // A message whose only attribute is a packet header cut to 2 bytes.
        var cut = [UInt8](repeating: 0, count: L.header + L.nfgen + L.attributeHeader + 4)
        cut.putHost32(UInt32(cut.count), at: L.lengthAt)
        cut.putHost16(L.packetType, at: L.typeAt)
        cut.putHost16(UInt16(L.attributeHeader + 2), at: L.header + L.nfgen + L.attributeLengthAt)
        cut.putHost16(UInt16(NFQA_PACKET_HDR.rawValue), at: L.header + L.nfgen + L.attributeTypeAt)
        let raw = RawTransport(messages: [bad, cut])
        let r2 = PacketReceiver(raw)
        #expect(try r2.receive(wait: false) == .processed(2))
        var got: [QueuedPacket] = []
        r2.forEachPacket { got.append($0) }
        #expect(got.count == 1)
        #expect(got.first?.id == 77 && got.first?.decoded == false)
        #expect(r2.undecodedPackets == 1)
        #expect(r2.netlinkErrors == 2, "both counted")
    }

    @Test func aMessageLongerThanItsSlotIsCountedAsTruncated() throws {
        var c = QueueConfiguration(queue: 3)
        c.copyRange = 0   // slots of 4096 bytes
        let big = PacketMessage(id: 5, payload: Array(repeating: 1, count: 6000))
        let (r, got, _) = try receive([big], configuration: c)
        #expect(r.truncatedMessages == 1)
        _ = got   // whether the cut message decodes is libmnl's call; it must never crash
    }

    @Test func aDrainedSocketIsWouldBlockAndReceivesNothing() throws {
        let t = ScriptedTransport(QueueConfiguration(queue: 3), script: [[]])
        let r = PacketReceiver(t)
        #expect(try r.receive(wait: false) == .wouldBlock)
        var n = 0
        r.forEachPacket { _ in n += 1 }
        #expect(n == 0)
    }
}

/// Hands the receiver raw byte messages (for layouts a `PacketMessage` cannot express).
final class RawTransport: QueueTransport {
    let configuration = QueueConfiguration(queue: 3)
    var queue: UInt16 { configuration.queue }
    let fd: Int32 = -1
    private var messages: [[UInt8]]
    init(messages: [[UInt8]]) { self.messages = messages }

    func receiveMessages(_ headers: UnsafeMutablePointer<rg_mmsghdr>, count: Int, wait: Bool) throws(SystemCallError) -> IOResult<Int> {
        let batch = messages.prefix(count)
        guard !batch.isEmpty else { return .wouldBlock }
        for (i, m) in batch.enumerated() {
            let iov = headers[i].msg_hdr.msg_iov!.pointee
            m.withUnsafeBytes { iov.iov_base!.copyMemory(from: $0.baseAddress!, byteCount: min(m.count, iov.iov_len)) }
            headers[i].msg_len = UInt32(min(m.count, iov.iov_len))
        }
        messages.removeFirst(batch.count)
        return .processed(batch.count)
    }
    func send(_ messages: UnsafeRawBufferPointer) throws(SystemCallError) {}
    func unbind() {}
    func close() {}
}
