#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// A rules file's text and the name errors use for it. The default is the ruleset embedded in
/// the binary (`nft/reflectguard.nft`, see `scripts/embed-rules.sh`), so no file on disk is needed.
public struct RulesFile: Sendable, Equatable {
    /// What errors call the file: its path, or `embedded:reflectguard.nft`.
    public var name: String
    public var text: String
    /// True for the embedded default.
    public var isEmbedded: Bool

    public init(name: String, text: String, isEmbedded: Bool = false) {
        self.name = name
        self.text = text
        self.isEmbedded = isEmbedded
    }

    public static let embeddedName = "embedded:reflectguard.nft"
    public static let embedded = RulesFile(name: embeddedName, text: embeddedRulesetText, isEmbedded: true)

    /// The largest rules file read: the embedded ruleset is 12 KiB; a file of protected networks
    /// and allowlists at 1 MiB holds some 40,000 prefixes.
    public static let sizeLimit = 1 << 20

    /// Reads a rules file. A missing or unreadable file throws an error marked `isUnreadableFile`
    /// (a runtime failure, exit 1) naming the path and the system's reason. Only a regular file of
    /// at most `sizeLimit` bytes is read: a device (`/dev/zero`) or a pipe that never ends was
    /// read until memory ran out (a SIGHUP onto one aborted the agent, rules left behind), and a
    /// FIFO nobody writes would block the reload forever; O_NONBLOCK keeps the open itself from
    /// waiting for a writer.
    public static func load(path: String) throws(RulesError) -> RulesFile {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw unreadable(path, errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw unreadable(path, errno) }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw unreadable(path, EISDIR)
        case S_IFCHR: throw unreadable(path, "a character device, not a regular file")
        case S_IFBLK: throw unreadable(path, "a block device, not a regular file")
        case S_IFIFO: throw unreadable(path, "a pipe, not a regular file")
        case S_IFSOCK: throw unreadable(path, "a socket, not a regular file")
        default: throw unreadable(path, "not a regular file")
        }
        guard st.st_size <= sizeLimit else { throw tooLarge(path) }
        // Read to the end, one byte past the limit at most: the file may grow while it is read.
        let bytes: [UInt8]
        do throws(SystemCallError) { bytes = try readToEnd(fd, limit: sizeLimit, name: "read(\(path))") } catch {
            throw unreadable(path, error.errno)
        }
        guard bytes.count <= sizeLimit else { throw tooLarge(path) }
        try refuseBinary(bytes[...], path)
        return RulesFile(name: path, text: String(decoding: bytes, as: UTF8.self))
    }

    /// nft's rules are text: a control byte other than tab, newline and carriage return means the
    /// path is not a rules file (a link to `/proc/self/environ` passes the regular-file check, and
    /// /proc reports size 0). Refused before the scanner quotes a line of it, which put the
    /// agent's environment, NULs and all, into the log. The message names the byte, not the text.
    static func refuseBinary(_ bytes: ArraySlice<UInt8>, _ path: String) throws(RulesError) {
        guard let i = bytes.firstIndex(where: { ($0 < 0x20 && $0 != 0x09 && $0 != 0x0a && $0 != 0x0d) || $0 == 0x7f })
        else { return }
        let before = bytes[..<i]
        let line = before.count(where: { $0 == 0x0a }) + 1
        let column = i - (before.lastIndex(of: 0x0a).map { $0 + 1 } ?? bytes.startIndex) + 1
        let hex = String(bytes[i], radix: 16, uppercase: true)
        throw RulesError("control byte 0x\(hex.count < 2 ? "0" : "")\(hex) in the file: a rules file is text (tab, newline and carriage return are its only control bytes)",
                         at: SourceLocation(file: path, line: line, column: column))
    }

    private static func tooLarge(_ path: String) -> RulesError {
        unreadable(path, "larger than \(sizeLimit) bytes")
    }

    private static func unreadable(_ path: String, _ errnoValue: Int32) -> RulesError {
        unreadable(path, String(cString: strerror(errnoValue)))
    }

    private static func unreadable(_ path: String, _ why: String) -> RulesError {
        var e = RulesError("cannot read rules file \(path): \(why)", at: nil)
        e.isUnreadableFile = true
        return e
    }
}
