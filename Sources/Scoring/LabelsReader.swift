extension LabelTable {
    /// Reads a labels file in pieces of any size, row by row, so memory stays the table's own
    /// (2 bytes a frame, at most `maxFrame`) plus one line whatever the file is, and the work
    /// is bounded whatever it is too: `--labels /dev/zero`, or a pipe that never ends, is refused
    /// within a line or after `maxLines` lines rather than read until memory runs out.
    public struct Reader {
        /// A row is a frame number, a comma and a label: the lab's longest is 29 bytes
        /// (`100000000,attack-backscatter`, CR LF). Past this a line is not a row, and a stream
        /// with no newline (`/dev/zero`) ends here.
        public static let maxLineBytes = 256
        /// The header, one row per frame (at most `maxFrame`), and the empty remainder after the
        /// last newline. Blank lines count too: a stream of newlines must end as well.
        public static let maxLines = LabelTable.maxFrame + 2

        private var table = LabelTable()
        private var ids: [String: UInt16] = ["unlabelled": 0]
        /// The last label's bytes and id: labels come in runs, so most rows skip the dictionary.
        private var lastName: [UInt8]? = nil
        private var lastID: UInt16 = 0
        /// The start of a line a previous piece ended in.
        private var partial: [UInt8] = []
        private var lineNumber = 0
        /// Line 1 was empty: the file is empty (nothing but whitespace) or it lacks its header.
        private var blankStart = false

        public init() {}

        /// Reads the next piece of the file. Throws a message naming the line on anything malformed.
        public mutating func read(_ bytes: UnsafeRawBufferPointer) throws {
            var rest = bytes[...]
            while let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
                let piece = UnsafeRawBufferPointer(rebasing: rest[..<newline])
                if partial.isEmpty {
                    try line(piece)
                } else {
                    try append(piece)
                    let whole = partial
                    partial.removeAll(keepingCapacity: true)
                    try whole.withUnsafeBytes { try line($0) }
                }
                rest = rest[(newline + 1)...]
            }
            try append(UnsafeRawBufferPointer(rebasing: rest))
        }

        /// The table, after the last piece.
        public mutating func finish() throws -> LabelTable {
            let last = partial
            partial = []
            try last.withUnsafeBytes { try line($0) }
            if blankStart { throw LabelError("empty file: expected header 'frame,label'") }
            return table
        }

        private mutating func append(_ bytes: UnsafeRawBufferPointer) throws {
            guard partial.count + bytes.count <= Self.maxLineBytes else { throw tooLong(lineNumber + 1) }
            partial.append(contentsOf: bytes)
        }

        private func tooLong(_ number: Int) -> LabelError {
            LabelError("line \(number): longer than \(Self.maxLineBytes) bytes, "
                + (number == 1 ? "expected header 'frame,label'" : "expected 'frame,label'"))
        }

        private mutating func line(_ raw: UnsafeRawBufferPointer) throws {
            lineNumber += 1
            guard lineNumber <= Self.maxLines else {
                throw LabelError("line \(lineNumber): more lines than a labels file has (a header and one row per frame, "
                    + "frames up to \(LabelTable.maxFrame))")
            }
            guard raw.count <= Self.maxLineBytes else { throw tooLong(lineNumber) }
            let text = raw.last == UInt8(ascii: "\r") ? UnsafeRawBufferPointer(rebasing: raw.dropLast()) : raw
            // The header comes first, exactly: an empty file (or one starting blank) is not a labels file.
            if lineNumber == 1 {
                if text.isEmpty { blankStart = true; return }
                guard text.elementsEqual("frame,label".utf8) else {
                    throw LabelError("line 1: expected header 'frame,label', got '\(Self.quoted(text))'")
                }
                return
            }
            if blankStart {
                guard String(decoding: raw, as: UTF8.self).allSatisfy(\.isWhitespace) else {
                    throw LabelError("line 1: expected header 'frame,label', got ''")
                }
                return
            }
            if text.isEmpty { return }
            guard let comma = text.firstIndex(of: UInt8(ascii: ",")),
                  let frame = Self.number(UnsafeRawBufferPointer(rebasing: text[..<comma])), frame >= 1 else {
                throw LabelError("line \(lineNumber): expected 'frame,label', got '\(Self.quoted(text))'")
            }
            guard frame <= LabelTable.maxFrame else {
                throw LabelError("line \(lineNumber): frame \(frame) is beyond the largest supported frame number \(LabelTable.maxFrame)")
            }
            let name = UnsafeRawBufferPointer(rebasing: text[(comma + 1)...])
            if lastName.map({ !name.elementsEqual($0) }) ?? true {
                lastID = try id(String(decoding: name, as: UTF8.self))
                lastName = Array(name)
            }
            table.set(frame: frame, label: lastID)
        }

        /// A label's index, a new one for a name not seen before. Names compare as Strings, as
        /// they are reported.
        private mutating func id(_ name: String) throws -> UInt16 {
            guard name == "legit" || isAttackLabel(name) else {
                throw LabelError("line \(lineNumber): label '\(name)' is neither 'legit' nor 'attack-…'")
            }
            if let known = ids[name] { return known }
            guard table.names.count < Int(UInt16.max) else { throw LabelError("too many distinct labels") }
            let id = UInt16(table.names.count)
            ids[name] = id
            table.names.append(name)
            return id
        }

        /// A line as an error quotes it: its first 64 characters (`/dev/urandom` is no text to print).
        static func quoted(_ text: UnsafeRawBufferPointer) -> String {
            let s = String(decoding: text, as: UTF8.self)
            return s.count <= 64 ? s : s.prefix(64) + "…"
        }

        /// A decimal number as `Int(_:)` reads one (an optional sign, then ASCII digits), nil on
        /// anything else or on overflow, without building a String for every row.
        static func number(_ bytes: UnsafeRawBufferPointer) -> Int? {
            var digits = bytes[...]
            var negative = false
            if let sign = digits.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                negative = sign == UInt8(ascii: "-")
                digits = digits.dropFirst()
            }
            guard !digits.isEmpty else { return nil }
            var v = 0
            for d in digits {
                guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
                let (times10, o1) = v.multipliedReportingOverflow(by: 10)
                let (next, o2) = negative ? times10.subtractingReportingOverflow(Int(d &- UInt8(ascii: "0")))
                    : times10.addingReportingOverflow(Int(d &- UInt8(ascii: "0")))
                guard !o1, !o2 else { return nil }
                v = next
            }
            return v
        }
    }
}
