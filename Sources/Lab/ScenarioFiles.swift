#if canImport(Glibc)
import Glibc
#endif
import PacketParser

/// Writes a scenario as a pcap file plus its `frame,label` CSV (docs/output.md `--labels`),
/// streaming both: the frame number of a label row is its frame's position in the pcap,
/// counted from 1 as Wireshark does.
public enum ScenarioFiles {
    /// `snapLength` cuts frames as a capture with `-s` would (the wire length stays whole):
    /// benchmark captures need headers only, and payloads are most of a legit capture's bytes.
    @discardableResult
    public static func write(_ scenario: Scenario, seed: UInt64, packets: Int, link: LinkType = .ethernet,
                             snapLength: UInt32 = 262_144, pcap: String, labels: String?,
                             flood: RSTFloodShape? = nil) throws -> ScenarioStats {
        let writer = try PcapWriter(path: pcap, link: link, snapLength: snapLength)
        let labelWriter = try labels.map { try LabelWriter(path: $0) }
        let generator = ScenarioGenerator(scenario: scenario, seed: seed, packets: packets, link: link, flood: flood)
        do {
            let stats = try generator.run { frame, time, label in
                try writer.write(frame, timestamp: time)
                try labelWriter?.append(label)
            }
            try writer.close()
            try labelWriter?.close()
            return stats
        } catch {
            try? writer.close()
            try? labelWriter?.close()
            throw error
        }
    }
}

/// The labels CSV, formatted by hand: millions of rows, no string per row.
final class LabelWriter {
    private let file: UnsafeMutablePointer<FILE>
    private let path: String
    private var buffer: [UInt8] = []
    private var frame = 0
    private var closed = false

    init(path: String) throws {
        file = try openOutput(path)
        self.path = path
        buffer.reserveCapacity(1 << 20)
        buffer.append(contentsOf: Array("frame,label\n".utf8))
    }

    private static let tokens: [[UInt8]] = FrameLabel.allCases.map { Array($0.token.utf8) }

    func append(_ label: FrameLabel) throws {
        frame += 1
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = frame
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[count] = UInt8(48 + n % 10)
                n /= 10
                count += 1
            } while n > 0
            for i in stride(from: count - 1, through: 0, by: -1) { buffer.append(d[i]) }
        }
        buffer.append(UInt8(ascii: ","))
        buffer.append(contentsOf: LabelWriter.tokens[Int(label.rawValue)])
        buffer.append(UInt8(ascii: "\n"))
        if buffer.count > (1 << 20) { try flush() }
    }

    func close() throws {
        guard !closed else { return }
        closed = true
        try flush()
        guard fclose(file) == 0 else {
            throw PcapWriteError(description: "cannot close \(path): \(String(cString: strerror(errno)))")
        }
    }

    private func flush() throws {
        let n = buffer.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard n == buffer.count else {
            throw PcapWriteError(description: "short write to \(path): \(String(cString: strerror(errno)))")
        }
        buffer.removeAll(keepingCapacity: true)
    }
}
