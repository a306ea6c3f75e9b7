#if canImport(Glibc)
import Glibc
#endif

/// The operator's configuration file (`/etc/reflectguard/reflectguard.conf`): only the defines
/// they change, in the rules file's own syntax (`define NAME = VALUE`, a `{ … }` value may span
/// lines), and comments. It is layered over a ruleset (the embedded one by default), so an upgrade
/// brings the new ruleset and keeps the operator's values; a copy of the whole ruleset in /etc
/// would go stale at the first upgrade. Precedence: ruleset < configuration < `-D` < `--protect`
/// (which adds to whatever protected networks the layers below give).
public enum ConfigOverlay {
    /// The path every command reads when it exists and neither `--config` nor `--rules` is given.
    public static let defaultPath = "/etc/reflectguard/reflectguard.conf"

    /// The ruleset (`--rules`, default the embedded one) and the configuration layered over it
    /// (`--config`, default `defaultPath` when it exists and `--rules` is not given: a whole
    /// ruleset of the operator's own replaces the built-in one and its configuration; `none`
    /// skips it).
    public static func files(rules: String?, config: String?) throws(RulesError) -> (rules: RulesFile, config: RulesFile?) {
        let file = try rules.map { p throws(RulesError) in try RulesFile.load(path: p) } ?? .embedded
        var configPath = config
        if configPath == nil, rules == nil, access(defaultPath, F_OK) == 0 {
            configPath = defaultPath
        }
        guard let configPath, configPath != "none" else { return (file, nil) }
        return (file, try RulesFile.load(path: configPath))
    }

    /// One `define` of the configuration file, with where its value was written.
    struct Entry {
        var name: String
        var value: String
        /// The value's first byte.
        var location: SourceLocation
        var lineCount: Int
    }

    /// The defines of `file`, in order. Anything else than a define, a comment or a blank line is
    /// refused at its position: a configuration file that held rules would be read as if it had
    /// none of them.
    static func parse(_ file: RulesFile) throws(RulesError) -> [Entry] {
        let bytes = Array(file.text.utf8)
        let lines = RulesScanner.splitLines(bytes)
        var out: [Entry] = []
        var index = 0
        while index < lines.count {
            let (start, end) = lines[index]
            var i = start
            while i < end, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0d { i += 1 }
            if i == end || bytes[i] == 0x23 { index += 1; continue }
            let rest = bytes[i..<end]
            guard rest.starts(with: Array("define".utf8)), rest.count > 6,
                  rest[i + 6] == 0x20 || rest[i + 6] == 0x09 else {
                throw RulesError("only 'define NAME = VALUE' lines and comments belong in a configuration file "
                                 + "(the ruleset is built in; --rules takes a whole ruleset)",
                                 at: SourceLocation(file: file.name, line: index + 1, column: i - start + 1))
            }
            let d = try RulesScanner.scanDefine(bytes, lines: lines, at: index, file: file.name)
            out.append(Entry(name: d.name, value: d.value,
                             location: SourceLocation(file: file.name, line: d.line, column: d.column),
                             lineCount: d.lineCount))
            index += d.lineCount
        }
        return out
    }
}

/// Where an override's value was written when it came from the configuration file: errors about
/// the value point there, not at the ruleset's define it replaces.
struct ConfigOrigin {
    var location: SourceLocation
    var lineCount: Int
    /// The value as written; offsets inside it are exact only while the value used is this text.
    var written: String

    func location(offset: Int, used: String?) -> SourceLocation {
        var l = location
        if lineCount == 1, used == written { l.column += offset }
        return l
    }
}
