import CPcap
import PacketParser

/// One frame of a capture: its bytes (valid only until the next `next()`), its timestamp and
/// its length on the wire.
public struct CapturedFrame {
    public var bytes: UnsafeRawBufferPointer
    /// Capture time in nanoseconds since the epoch.
    public var timestamp: Int64
    public var wireLength: Int
}

public struct CaptureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads pcap and pcapng files through libpcap (any link type libpcap knows; ReflectGuard parses
/// those `LinkType` lists). Frames are handed out by reference into libpcap's buffer: no copy.
public final class CaptureReader {
    private let handle: OpaquePointer
    public let path: String
    public let linkType: LinkType
    /// libpcap's DLT name, e.g. `EN10MB` (CONTRACT.md `input.link_type`).
    public let linkTypeName: String
    /// libpcap's DLT number.
    public let dlt: Int32

    public init(path: String) throws {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        // Nanosecond precision when the file has it; libpcap scales microsecond files up.
        guard let h = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errbuf) else {
            throw CaptureError("cannot read capture \(path): \(String(cString: errbuf))")
        }
        let dlt = pcap_datalink(h)
        let name = pcap_datalink_val_to_name(dlt).map { String(cString: $0) } ?? "DLT_\(dlt)"
        guard let lt = LinkType(dlt: dlt) else {
            pcap_close(h)
            throw CaptureError("cannot read capture \(path): unsupported link type \(name) (\(dlt))")
        }
        self.handle = h
        self.path = path
        self.linkType = lt
        self.linkTypeName = name
        self.dlt = dlt
    }

    deinit { pcap_close(handle) }

    /// The next frame, nil at the end of the file. Throws on a read error (a cut file).
    public func next() throws -> CapturedFrame? {
        var header: UnsafeMutablePointer<pcap_pkthdr>? = nil
        var data: UnsafePointer<UInt8>? = nil
        let rc = pcap_next_ex(handle, &header, &data)
        switch rc {
        case 1:
            let h = header!.pointee
            let ts = Int64(h.ts.tv_sec) * 1_000_000_000 + Int64(h.ts.tv_usec)
            return CapturedFrame(bytes: UnsafeRawBufferPointer(start: data, count: Int(h.caplen)),
                                 timestamp: ts, wireLength: Int(h.len))
        case PCAP_ERROR_BREAK:
            return nil
        default:
            throw CaptureError("error reading \(path): \(String(cString: pcap_geterr(handle)))")
        }
    }
}
