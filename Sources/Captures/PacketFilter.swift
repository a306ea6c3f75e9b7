#if canImport(Glibc)
import Glibc
#endif
import CPcap
import PacketParser

/// A BPF filter expression (`tcpdump`'s syntax: `tcp port 443`, `net 198.18.0.0/15`) applied to
/// a capture file's frames before they are scored, as `tcpdump -r FILE EXPR` would. libpcap
/// compiles it for each link type met (a pcapng file's interfaces may differ); a frame of a link
/// type ReflectGuard cannot read never matches.
public final class PacketFilter {
    public let expression: String
    private var programs: [LinkType: bpf_program] = [:]

    /// Compiles `expression` for `link` at once, so a bad expression is reported before anything
    /// is read.
    public init(_ expression: String, link: LinkType) throws {
        self.expression = expression
        _ = try program(for: link)
    }

    deinit {
        for key in programs.keys { pcap_freecode(&programs[key]!) }
    }

    /// Whether the frame matches the expression.
    @inline(__always)
    public func matches(_ frame: CapturedFrame) throws -> Bool {
        guard let link = frame.link else { return false }
        let program = try program(for: link)
        var header = pcap_pkthdr()
        header.caplen = UInt32(frame.bytes.count)
        header.len = UInt32(clamping: frame.wireLength)
        return withUnsafePointer(to: program) { p in
            pcap_offline_filter(p, &header, frame.bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) != 0
        }
    }

    private func program(for link: LinkType) throws -> bpf_program {
        if let p = programs[link] { return p }
        // libpcap's DLT for a link type (DLT_RAW is 12 on Linux; LinkType.linktype gives LINKTYPE_RAW).
        let dlt = link == .raw ? 12 : Int32(link.linktype)
        guard let dead = pcap_open_dead(dlt, 262_144) else {
            throw CaptureError("--filter '\(expression)': libpcap could not open a handle for link type \(dlt)")
        }
        defer { pcap_close(dead) }
        var program = bpf_program()
        guard pcap_compile(dead, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            let name = pcap_datalink_val_to_name(dlt).map { String(cString: $0) } ?? "\(dlt)"
            throw CaptureError("--filter '\(expression)': \(String(cString: pcap_geterr(dead))) (link type \(name))")
        }
        programs[link] = program
        return program
    }
}

extension LiveCapture {
    /// Sets a BPF filter on the live capture: the kernel drops what does not match before it is
    /// copied to us.
    public func setFilter(_ expression: String) throws {
        var program = bpf_program()
        guard pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw CaptureError("--filter '\(expression)': \(String(cString: pcap_geterr(handle)))")
        }
        defer { pcap_freecode(&program) }
        guard pcap_setfilter(handle, &program) == 0 else {
            throw CaptureError("--filter '\(expression)': \(String(cString: pcap_geterr(handle)))")
        }
    }
}
