import CBPF
#if canImport(Glibc)
import Glibc
#endif

/// Where one program of the XDP path runs.
public struct XDPAttachment: Sendable, CustomStringConvertible {
    public enum Hook: String, Sendable { case native = "xdp-native", generic = "xdp-generic", tcEgress = "tc-egress" }
    public var interface: String
    public var ifindex: UInt32
    public var program: BPFPrograms.Program
    public var hook: Hook
    /// Whether an earlier agent's program was found there and replaced (never stacked).
    public var replaced: Bool
    public var description: String { "\(interface):\(program.rawValue)@\(hook.rawValue)\(replaced ? " (replaced)" : "")" }
}

/// Attaches, finds and detaches the XDP path's programs. A program of ours is recognised by its
/// name (BPFPrograms.Program), so a restarted agent replaces the one a killed agent left,
/// atomically (XDP_FLAGS_REPLACE), and never runs two; a program of somebody else is never
/// touched: that interface stays on the nft path.
public enum XDPAttachments {
    /// Attaches `program` to the interface's XDP hook: native (the driver's hook, before any skb)
    /// before generic (after the skb is built: the same verdicts, little of the gain).
    public static func attach(_ programs: BPFPrograms, _ program: BPFPrograms.Program, interface: String) throws(BPFError) -> XDPAttachment {
        let idx = if_nametoindex(interface)
        guard idx != 0 else { throw BPFError(message: "interface \(interface): no such interface") }
        let fd = try programs.programFD(program)
        var id: UInt32 = 0
        var mode: UInt32 = 0
        _ = rg_xdp_query(Int32(idx), &id, &mode)
        if id != 0 {
            guard let (name, oldFD) = programName(id), BPFPrograms.Program(rawValue: name) != nil else {
                throw BPFError(message: "interface \(interface) runs another XDP program (id \(id)): left alone")
            }
            defer { Glibc.close(oldFD) }
            let r = rg_xdp_attach(Int32(idx), fd, mode | rg_xdp_flags_replace, oldFD)
            if r != 0 { throw BPFError("replacing our earlier XDP program on \(interface)", r) }
            return XDPAttachment(interface: interface, ifindex: idx, program: program,
                                 hook: mode == rg_xdp_flags_native ? .native : .generic, replaced: true)
        }
        let native = rg_xdp_attach(Int32(idx), fd, rg_xdp_flags_native | rg_xdp_flags_if_noexist, -1)
        if native == 0 {
            return XDPAttachment(interface: interface, ifindex: idx, program: program, hook: .native, replaced: false)
        }
        let generic = rg_xdp_attach(Int32(idx), fd, rg_xdp_flags_generic | rg_xdp_flags_if_noexist, -1)
        if generic != 0 {
            throw BPFError("attaching XDP to \(interface) (native: \(String(cString: strerror(-native))))", generic)
        }
        return XDPAttachment(interface: interface, ifindex: idx, program: program, hook: .generic, replaced: false)
    }

    /// The SYN recorder on the interface's tc clsact egress hook (a host's own SYNs).
    public static func attachEgress(_ programs: BPFPrograms, interface: String) throws(BPFError) -> XDPAttachment {
        let idx = if_nametoindex(interface)
        guard idx != 0 else { throw BPFError(message: "interface \(interface): no such interface") }
        var old: UInt32 = 0
        _ = rg_tc_query_egress(Int32(idx), &old)
        let r = rg_tc_attach_egress(Int32(idx), try programs.programFD(.synRecordTC))
        if r != 0 { throw BPFError("attaching the SYN recorder to \(interface) tc egress", r) }
        return XDPAttachment(interface: interface, ifindex: idx, program: .synRecordTC, hook: .tcEgress, replaced: old != 0)
    }

    /// Detaches what `attach` attached, only while it is still the program there (an operator or
    /// a second agent may have replaced it since). Needs CAP_NET_ADMIN only.
    public static func detach(_ a: XDPAttachment, _ programs: BPFPrograms) -> Bool {
        switch a.hook {
        case .tcEgress:
            return rg_tc_detach_egress(Int32(a.ifindex)) == 0
        case .native, .generic:
            guard let fd = try? programs.programFD(a.program) else { return false }
            let mode = a.hook == .native ? rg_xdp_flags_native : rg_xdp_flags_generic
            return rg_xdp_attach(Int32(a.ifindex), -1, mode | rg_xdp_flags_replace, fd) == 0
        }
    }

    /// Every program of ours attached to any interface of this network namespace (`nft remove`,
    /// or what a killed agent left), detached. Returns what it detached.
    public static func detachAll() -> [String] {
        var done: [String] = []
        guard let list = if_nameindex() else { return done }
        defer { if_freenameindex(list) }
        var p = list
        while p.pointee.if_index != 0 {
            let idx = Int32(p.pointee.if_index)
            let name = String(cString: p.pointee.if_name)
            var id: UInt32 = 0
            var mode: UInt32 = 0
            if rg_xdp_query(idx, &id, &mode) == 0, id != 0, let (prog, fd) = programName(id) {
                if BPFPrograms.Program(rawValue: prog) != nil, rg_xdp_attach(idx, -1, mode | rg_xdp_flags_replace, fd) == 0 {
                    done.append("\(name):\(prog)")
                }
                Glibc.close(fd)
            }
            var tc: UInt32 = 0
            if rg_tc_query_egress(idx, &tc) == 0, tc != 0, rg_tc_detach_egress(idx) == 0 {
                done.append("\(name):\(BPFPrograms.Program.synRecordTC.rawValue)")
            }
            p += 1
        }
        return done
    }

    /// A program's name and an fd to it (the caller closes it), by id.
    static func programName(_ id: UInt32) -> (String, Int32)? {
        var buf = [CChar](repeating: 0, count: 32)
        var fd: Int32 = -1
        guard rg_prog_name(id, &buf, buf.count, &fd) == 0 else { return nil }
        return (String(decoding: buf.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self), fd)
    }
}

/// The BPF filesystem, where the agent pins its maps and programs for inspection
/// (`bpftool map dump pinned /sys/fs/bpf/reflectguard/net<inode>/rg_armed4`). Debian does not mount
/// it; the agent does. Under `ip netns exec` the mount (and so the pins) lasts as long as that
/// process's mount namespace, which is why a restarted agent finds its programs by name on the
/// interfaces, not by pin.
public enum BPFFilesystem {
    static let root = "/sys/fs/bpf"
    static let bpfMagic: Int = 0xcafe_4a11

    /// Mounts bpffs at /sys/fs/bpf unless it is there. Returns whether it mounted.
    public static func mountIfNeeded() throws(BPFError) -> Bool {
        var s = statfs()
        if statfs(root, &s) == 0, Int(s.f_type) == bpfMagic { return false }
        if mount("bpf", root, "bpf", 0, nil) != 0 { throw BPFError("mounting bpffs on \(root)", errno, log: false) }
        return true
    }

    /// This network namespace's pin directory: programs attach per namespace, the filesystem is
    /// shared by every namespace of the mount namespace.
    public static func pinDirectory() -> String {
        var st = stat()
        let ino = stat("/proc/self/ns/net", &st) == 0 ? UInt64(st.st_ino) : 0
        return "\(root)/reflectguard/net\(ino)"
    }

    /// Pins every map and program under `dir`, replacing what an earlier agent left there.
    public static func pin(_ programs: BPFPrograms, at dir: String) throws(BPFError) {
        unpin(dir)
        mkdir("\(root)/reflectguard", 0o700)
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw BPFError("creating \(dir)", errno, log: false) }
        try programs.pinAll(dir)
    }

    /// Removes the pins under `dir` (the kernel frees a map or program once nothing holds it).
    public static func unpin(_ dir: String) {
        guard let d = opendir(dir) else { return }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { unlink("\(dir)/\(name)") }
        }
        closedir(d)
        rmdir(dir)
    }
}
