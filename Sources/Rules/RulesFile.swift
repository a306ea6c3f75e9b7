#if canImport(Glibc)
import Glibc
#endif

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

    /// Reads a rules file. A missing or unreadable file throws an error marked `isUnreadableFile`
    /// (a runtime failure, exit 1) naming the path and the system's reason.
    public static func load(path: String) throws(RulesError) -> RulesFile {
        guard let f = fopen(path, "rb") else {
            throw unreadable(path, errno)
        }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count {
                if ferror(f) != 0 {
                    throw unreadable(path, errno)
                }
                break
            }
        }
        return RulesFile(name: path, text: String(decoding: bytes, as: UTF8.self))
    }

    private static func unreadable(_ path: String, _ errnoValue: Int32) -> RulesError {
        var e = RulesError("cannot read rules file \(path): \(String(cString: strerror(errnoValue)))", at: nil)
        e.isUnreadableFile = true
        return e
    }
}
