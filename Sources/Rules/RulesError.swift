/// A position in a rules file, 1-based, columns in bytes as nft counts them.
public struct SourceLocation: Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// Why a rules file (or an override of it) cannot be used. Printed as `FILE:LINE:COL: error: …`
/// like a compiler, so editors jump to it. A value given on the command line (`--protect`, `-D`)
/// has no location: that is a usage error (exit 2), a file's error is a rules error (exit 3).
public struct RulesError: Error, Equatable, Sendable, CustomStringConvertible {
    public var location: SourceLocation?
    public var message: String
    /// The bad value came from `--protect` or `-D`, not from the file.
    public var fromCommandLine: Bool
    /// The file could not be read at all: a runtime failure (exit 1, `Error: …`), not a rules
    /// error, since there is no file:line:column to name (the documented exit codes).
    public var isUnreadableFile = false

    public init(_ message: String, at location: SourceLocation?, fromCommandLine: Bool = false) {
        self.message = Self.printable(message)
        self.location = location
        self.fromCommandLine = fromCommandLine
    }

    public var description: String {
        if let location { return "\(location): error: \(message)" }
        return message
    }

    /// Messages quote what they refuse, and that text goes to a terminal and the log: a control
    /// character in it is written `\u{…}` (an escape sequence could rewrite the operator's
    /// terminal, a NUL cuts a C log reader's line), and a message is cut at `messageLimit`
    /// characters, since one quoted line of a 1 MiB file would otherwise go into the log whole.
    static let messageLimit = 512

    static func printable(_ message: String) -> String {
        var out = ""
        var count = 0
        for s in message.unicodeScalars {
            guard count < messageLimit else { return out + "…" }
            if RulesConfig.isControl(s) { out += "\\u{\(String(s.value, radix: 16))}" } else { out.unicodeScalars.append(s) }
            count += 1
        }
        return out
    }
}
