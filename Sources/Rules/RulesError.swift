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
        self.message = message
        self.location = location
        self.fromCommandLine = fromCommandLine
    }

    public var description: String {
        if let location { return "\(location): error: \(message)" }
        return message
    }
}
