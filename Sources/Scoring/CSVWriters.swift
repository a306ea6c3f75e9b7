#if canImport(Glibc)
import Glibc
#endif
import PacketParser
import VerdictEngine

public struct OutputError: Error, CustomStringConvertible {
    public let description: String
}

/// A file written through a 1 MiB buffer: `--verdicts` writes a row for every frame, so a
/// million-frame capture must not cost a million `write` calls.
public final class BufferedFile {
    private let file: UnsafeMutablePointer<FILE>
    private var buffer: [UInt8] = []
    public let path: String
    /// The first write error, reported at `close()` (rows are written on the packet path).
    private var failure: String?

    public init(path: String) throws {
        guard let f = fopen(path, "wb") else {
            throw OutputError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        file = f
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    public func write(_ s: String) {
        var s = s
        s.withUTF8 { buffer.append(contentsOf: $0) }
        if buffer.count >= 1 << 20 { flush() }
    }

    /// Appends a decimal number without building a String.
    public func write(number: Int) {
        if number < 0 { buffer.append(UInt8(ascii: "-")) }
        var v = number.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat { d[n] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10; n += 1 } while v > 0
            while n > 0 { n -= 1; buffer.append(d[n]) }
        }
    }

    /// Seconds since the epoch from nanoseconds, as `JSONReport.seconds` prints them (fraction
    /// trimmed of trailing zeros down to microseconds), without building a String: the sessions
    /// CSV writes two per session and String formatting was half of a `--sessions` run (perf).
    public func write(seconds ns: Int64) {
        let s = ns >= 0 ? ns / 1_000_000_000 : (ns - 999_999_999) / 1_000_000_000
        var frac = Int(ns - s * 1_000_000_000)
        write(number: Int(s))
        buffer.append(UInt8(ascii: "."))
        var digits = 9
        while digits > 6 && frac % 10 == 0 { frac /= 10; digits -= 1 }
        var div = 1
        for _ in 1..<digits { div *= 10 }
        while div > 0 {
            buffer.append(UInt8(ascii: "0") + UInt8(frac / div % 10))
            div /= 10
        }
    }

    public func write(bytes: StaticString) {
        bytes.withUTF8Buffer { buffer.append(contentsOf: $0) }
    }

    private func flush() {
        guard !buffer.isEmpty else { return }
        let n = buffer.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        if n != buffer.count && failure == nil {
            failure = "cannot write \(path): \(String(cString: strerror(errno)))"
        }
        buffer.removeAll(keepingCapacity: true)
    }

    public func close() throws {
        flush()
        if fclose(file) != 0 && failure == nil {
            failure = "cannot write \(path): \(String(cString: strerror(errno)))"
        }
        if let failure { throw OutputError(description: failure) }
    }
}

/// `--verdicts FILE.csv`: `frame,verdict,reason`, one row for every frame (CONTRACT.md).
public final class VerdictsCSV {
    private let out: BufferedFile

    public init(path: String) throws {
        out = try BufferedFile(path: path)
        out.write(bytes: "frame,verdict,reason\n")
    }

    public func row(frame: Int, decision: Decision) {
        out.write(number: frame)
        out.write(bytes: decision.verdict == .drop ? ",drop," : ",accept,")
        out.write(decision.reason.token)
        out.write(bytes: "\n")
    }

    public func close() throws { try out.close() }
}

/// `--sessions FILE.csv`: one row per session as it closes.
public final class SessionsCSV {
    public static let header =
        "client,client_port,server,server_port,start,end,packets_to_server,packets_to_client,end_reason,conn_state,history"
    private let out: BufferedFile

    public init(path: String) throws {
        out = try BufferedFile(path: path)
        out.write(Self.header + "\n")
    }

    public func row(_ s: SessionRecord) {
        out.write(s.client.description)
        out.write(bytes: ",")
        out.write(number: Int(s.clientPort))
        out.write(bytes: ",")
        out.write(s.server.description)
        out.write(bytes: ",")
        out.write(number: Int(s.serverPort))
        out.write(bytes: ",")
        out.write(seconds: s.start)
        out.write(bytes: ",")
        out.write(seconds: s.end)
        out.write(bytes: ",")
        out.write(number: Int(truncatingIfNeeded: s.packetsToServer))
        out.write(bytes: ",")
        out.write(number: Int(truncatingIfNeeded: s.packetsToClient))
        out.write(bytes: ",")
        out.write(s.endReason.rawValue)
        out.write(bytes: ",")
        out.write(s.connState.rawValue)
        out.write(bytes: ",")
        out.write(s.history)
        out.write(bytes: "\n")
    }

    public func close() throws { try out.close() }
}
