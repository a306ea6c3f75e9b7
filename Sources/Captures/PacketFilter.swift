#if canImport(Glibc)
import Glibc
#endif
import CPcap
import SystemCalls
import PacketParser

/// A BPF filter expression (`tcpdump`'s syntax: `tcp port 443`, `net 198.18.0.0/15`) applied to
/// a capture file's frames before they are scored, as `tcpdump -r FILE EXPR` would. libpcap
/// compiles it for each link type met (a pcapng file's interfaces may differ); a frame of a link
/// type ReflectGuard cannot read never matches.
public final class PacketFilter {
    public let expression: String
    /// Compiled programs by link type, as opaque pointers (see `rg_filter_compile` for why).
    private var programs: [LinkType: UnsafeMutableRawPointer] = [:]

    /// Compiles `expression` for `link` at once, so a bad expression is reported before anything
    /// is read.
    public init(_ expression: String, link: LinkType) throws {
        self.expression = expression
        _ = try program(for: link)
    }

    deinit {
        for p in programs.values { rg_filter_free(p) }
    }

    /// Whether the frame matches the expression.
    @inline(__always)
    public func matches(_ frame: CapturedFrame) throws -> Bool {
        guard let link = frame.link else { return false }
        let program = try program(for: link)
        return rg_filter_matches(program, frame.bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                 UInt32(frame.bytes.count), UInt32(clamping: frame.wireLength)) != 0
    }

    private func program(for link: LinkType) throws -> UnsafeMutableRawPointer {
        if let p = programs[link] { return p }
        // libpcap's DLT for a link type (DLT_RAW is 12 on Linux; LinkType.linktype gives LINKTYPE_RAW).
        let dlt = link == .raw ? 12 : Int32(link.linktype)
        var error = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let program = rg_filter_compile(dlt, expression, &error) else {
            let name = pcap_datalink_val_to_name(dlt).map { String(cString: $0) } ?? "\(dlt)"
            throw CaptureError("--filter '\(expression)': \(String(nulTerminated: error)) (link type \(name))")
        }
        programs[link] = program
        return program
    }
}

extension LiveCapture {
    /// Sets a BPF filter on the live capture: the kernel drops what does not match before it is
    /// copied to us.
    public func setFilter(_ expression: String) throws {
        guard rg_set_filter(handle, expression) == 0 else {
            throw CaptureError("--filter '\(expression)': \(String(cString: pcap_geterr(handle)))")
        }
    }
}
