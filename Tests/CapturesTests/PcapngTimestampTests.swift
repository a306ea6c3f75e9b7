import Foundation
import Testing
import Captures
import TestSupport

/// pcapng carries 64-bit timestamps in units its interface chooses (`if_tsresol`, down to one
/// second) shifted by a 64-bit number of seconds (`if_tsoffset`); libpcap hands the result out in
/// a `timeval` as is. A time beyond what scoring can hold ends the capture at that frame with a
/// warning that names it (the frames before it are scored), as a cut capture does, never a trap.
@Suite struct PcapngTimestampTests {
    /// A pcapng file: little-endian section header, one Ethernet interface with `options`, and an
    /// enhanced packet block per timestamp (raw 64-bit value in the interface's units).
    static func pcapng(options: [UInt8], timestamps: [UInt64]) -> [UInt8] {
        func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
            let length = UInt32(12 + body.count)
            return u32(type) + u32(length) + body + u32(length)
        }
        var file = block(0x0A0D_0D0A, u32(0x1A2B_3C4D) + u16(1) + u16(0) + [UInt8](repeating: 0xff, count: 8))
        let endOfOptions: [UInt8] = options.isEmpty ? [] : [0, 0, 0, 0]
        file += block(1, u16(1) + u16(0) + u32(0) + options + endOfOptions)
        // A TCP SYN from 198.18.2.10 to 203.0.113.5, so the frames before a refused one are scored.
        let frame: [UInt8] = [UInt8](repeating: 2, count: 6) + [UInt8](repeating: 4, count: 6) + [0x08, 0x00,
            0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 198, 18, 2, 10, 203, 0, 113, 5,
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]
        for t in timestamps {
            let body = u32(0) + u32(UInt32(t >> 32)) + u32(UInt32(t & 0xffff_ffff))
                + u32(UInt32(frame.count)) + u32(UInt32(frame.count)) + frame
                + [UInt8](repeating: 0, count: (4 - frame.count % 4) % 4)
            file += block(6, body)
        }
        return file
    }

    /// An interface option: code, length, value padded to 32 bits.
    static func option(_ code: UInt16, _ value: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: code.littleEndian, Array.init) + withUnsafeBytes(of: UInt16(value.count).littleEndian, Array.init)
            + value + [UInt8](repeating: 0, count: (4 - value.count % 4) % 4)
    }
    static func resolution(_ code: UInt8) -> [UInt8] { option(9, [code]) }
    static func offset(_ seconds: Int64) -> [UInt8] { option(14, withUnsafeBytes(of: seconds.littleEndian, Array.init)) }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let options: [UInt8]
        /// Frames 1 and 2 are ordinary; the last one is out of range.
        let last: UInt64
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        // Microseconds (the default resolution): 2^64-1 µs is 18 million years after 1970.
        Case(name: "largest timestamp in microseconds", options: [], last: .max),
        // One-second resolution: 2^63 seconds.
        Case(name: "one-second resolution", options: resolution(0), last: 1 << 63),
        Case(name: "one-second binary resolution", options: resolution(0x80), last: 1 << 62),
        // An offset of 2^63-1 seconds, then of -2^63: wrapped by libpcap, too far either way.
        Case(name: "largest offset", options: offset(.max), last: 3),
        Case(name: "smallest offset", options: offset(.min), last: 3),
        // 2^63-1 ns fits in 64 bits but is past 2116, beyond what scoring adds to a time safely.
        Case(name: "nanoseconds past 2116", options: resolution(9), last: UInt64(Int64.max)),
    ]

    @Test(arguments: cases)
    func anOutOfRangeTimeEndsTheCaptureWithAWarningNamingTheFrame(_ c: Case) throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        // An offset moves every frame of its interface: there the first frame is already out of range.
        let offsetOnly = c.name.hasSuffix("offset")
        let stamps: [UInt64] = offsetOnly ? [c.last] : [1_700_000_000, 1_700_000_001, c.last]
        let path = TestEnvironment.temporaryPath("ts-\(c.name.replacingOccurrences(of: " ", with: "-")).pcapng")
        try Data(Self.pcapng(options: c.options, timestamps: stamps)).write(to: URL(fileURLWithPath: path))
        let r = try TestEnvironment.run(bin, ["score", path, "--format", "json"])
        #expect(r.status == 0, "\(c.name): exit \(r.status): \(r.err.prefix(400))")
        let frame = stamps.count
        #expect(r.err.hasPrefix("Warning: \(path): frame \(frame): time stamp "), "\(c.name): \(r.err.prefix(400))")
        #expect(r.err.contains("reporting the \(frame - 1) frames before it"), "\(c.name): \(r.err.prefix(400))")
        #expect(r.err.split(separator: "\n").count == 1, "\(r.err)")
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        #expect((json?["packets"] as? [String: Any])?["frames"] as? Int == frame - 1, "\(r.out.prefix(300))")

        // The reader itself: the frames before, then the error naming the frame.
        let reader = try CaptureReader(path: path)
        for _ in 1..<frame { #expect(try reader.next() != nil) }
        let e = #expect(throws: CaptureError.self) { _ = try reader.next() }
        #expect(e?.description.contains("frame \(frame): time stamp") == true, "\(String(describing: e))")
    }

    /// Times at the edges of the range (2^62 ns either side of the epoch, from a negative offset)
    /// score to the end, in both thread modes, with every output: nothing downstream overflows.
    @Test(arguments: [1, 2])
    func timesAtTheEdgesOfTheRangeScoreToTheEnd(threads: Int) throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let edge: Int64 = 4_611_686_018  // whole seconds in 2^62 ns
        let span = UInt64(2 * edge) * 1_000_000_000
        let stamps: [UInt64] = [0, span, 0, 1, span, 0, span - 1, span, 0]
        let path = TestEnvironment.temporaryPath("ts-edges.pcapng")
        try Data(Self.pcapng(options: Self.resolution(9) + Self.offset(-edge), timestamps: stamps))
            .write(to: URL(fileURLWithPath: path))
        let verdicts = TestEnvironment.temporaryPath("ts-edges-\(threads).csv")
        let sessions = TestEnvironment.temporaryPath("ts-edges-sessions-\(threads).csv")
        let r = try TestEnvironment.run(bin, ["score", path, "--protect", "198.18.2.0/24", "--threads", String(threads),
                                              "--format", "json", "--verdicts", verdicts, "--sessions", sessions])
        #expect(r.status == 0, "exit \(r.status): \(r.err.prefix(400))")
        #expect(r.err.isEmpty, "\(r.err.prefix(400))")
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        #expect((json?["packets"] as? [String: Any])?["frames"] as? Int == stamps.count)
        let rows = try String(contentsOfFile: verdicts, encoding: .utf8).split(separator: "\n")
        #expect(rows.count == stamps.count + 1)
    }
}
