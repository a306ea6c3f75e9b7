/// The little of nft's syntax ReflectGuard must understand: top-level `define`s (with their exact
/// byte ranges, so a value can be replaced in place) and the chain blocks of a table with their
/// `# @hook` / `# @backend` variant markers. Everything else is nft's business: the text goes to
/// libnftables unchanged apart from the substitutions, so nft reports its own errors.
struct RulesScanner {
    struct Define {
        var name: String
        /// The value's text as written (comments inside multi-line values removed).
        var value: String
        /// Byte range of the value in the file (from its first to its last non-blank byte).
        var range: Range<Int>
        var line: Int
        var column: Int
        /// Lines the value spans (1 for a one-line value).
        var lineCount: Int
    }

    struct ChainBlock {
        var name: String
        /// `hook` or `backend`, with its value, from a `# @key value` line right above the chain.
        var variant: (key: String, value: String)?
        /// First line to blank when the variant is not chosen (the marker line, if any).
        var firstLine: Int
        /// The line of the closing brace.
        var lastLine: Int
    }

    var defines: [Define] = []
    var chains: [ChainBlock] = []
    /// Sets whose declaration lists `elements`: configuration (protected networks, allowlist),
    /// as opposed to sets the kernel and the agent fill (pending SYNs, armed victims, meters).
    var configuredSets: [String] = []
    /// For each line (1-based index; [0] unused), whether it belongs to a define.
    var defineLines: Set<Int> = []

    static func isIdentByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x5f
    }

    init(bytes: [UInt8], file: String) throws(RulesError) {
        let lines = RulesScanner.splitLines(bytes)
        var depth = 0
        var lineIndex = 0
        var pendingMarker: (key: String, value: String, line: Int)?
        var openChain: (name: String, variant: (key: String, value: String)?, first: Int, depth: Int)?
        var openSet: String?
        while lineIndex < lines.count {
            let (start, end) = lines[lineIndex]
            let lineNo = lineIndex + 1
            let text = Array(bytes[start..<end])
            let trimmed = RulesScanner.trimmed(text)
            if depth == 0, trimmed.starts(with: Array("define".utf8)), trimmed.count > 6,
               trimmed[6] == 0x20 || trimmed[6] == 0x09 {
                let d = try RulesScanner.scanDefine(bytes, lines: lines, at: lineIndex, file: file)
                defines.append(d)
                for l in lineNo..<(lineNo + d.lineCount) { defineLines.insert(l) }
                lineIndex += d.lineCount
                pendingMarker = nil
                continue
            }
            // A `# @hook router` style marker applies to the chain on the next line.
            if trimmed.first == 0x23 {
                let words = String(decoding: trimmed.dropFirst(), as: UTF8.self)
                    .split(whereSeparator: { $0 == " " || $0 == "\t" })
                if words.count == 2, words[0] == "@hook" || words[0] == "@backend" || words[0] == "@state" {
                    pendingMarker = (String(words[0].dropFirst()), String(words[1]), lineNo)
                    lineIndex += 1
                    continue
                }
            }
            if depth == 1, openChain == nil, let name = RulesScanner.chainName(trimmed) {
                let marker = pendingMarker
                openChain = (name, marker.map { ($0.key, $0.value) }, marker?.line ?? lineNo, depth)
            }
            if depth == 1, openSet == nil, let name = RulesScanner.blockName("set", trimmed) { openSet = name }
            if let set = openSet, depth >= 2, trimmed.starts(with: Array("elements".utf8)),
               !configuredSets.contains(set) {
                configuredSets.append(set)
            }
            if !trimmed.isEmpty { pendingMarker = nil }
            depth += RulesScanner.braceDelta(text)
            if depth <= 1 { openSet = nil }
            if depth < 0 {
                throw RulesError("unbalanced '}'", at: SourceLocation(file: file, line: lineNo, column: 1))
            }
            if let c = openChain, depth <= c.depth {
                chains.append(ChainBlock(name: c.name, variant: c.variant, firstLine: c.first, lastLine: lineNo))
                openChain = nil
            }
            lineIndex += 1
        }
        try RulesScanner.checkStatements(bytes, lines: lines, defineLines: defineLines, file: file)
    }

    /// Refuses what would act outside `table inet reflectguard` or out of ReflectGuard's sight.
    /// nft runs every command of the file in one transaction, so `flush ruleset` in a rules file
    /// empties the whole ruleset, ReflectGuard's table included, and the apply still succeeds
    /// (exit 0 and nothing loaded, the table then built from only what follows). Other tables and
    /// commands (`delete`, `flush`, `reset`, `add`, …) would change what ReflectGuard does not own
    /// and `nft remove` would never take back; `include` reads files ReflectGuard never sees (its
    /// policy would not be the kernel's), as do `redefine`/`undefine` and a `define` inside a
    /// block (nft allows all four in any block); a table `flags dormant` switches the table off.
    static func checkStatements(_ bytes: [UInt8], lines: [(Int, Int)], defineLines: Set<Int>,
                                file: String) throws(RulesError) {
        var depth = 0
        for (idx, (start, end)) in lines.enumerated() where !defineLines.contains(idx + 1) {
            var i = start
            var atStart = true
            var quoted = false
            while i < end {
                let b = bytes[i]
                if quoted {
                    if b == 0x22 { quoted = false }
                    i += 1
                    continue
                }
                switch b {
                case 0x23: i = end; continue                         // comment
                case 0x22: quoted = true; atStart = false
                case 0x3b: atStart = true
                case 0x7b: depth += 1; atStart = true
                case 0x7d: depth -= 1; atStart = true
                case 0x20, 0x09, 0x0d: break
                default:
                    guard atStart else { break }
                    atStart = false
                    var j = i
                    while j < end, !(bytes[j] == 0x3b || bytes[j] == 0x7b || bytes[j] == 0x7d || bytes[j] == 0x23) { j += 1 }
                    let words = String(decoding: bytes[i..<j], as: UTF8.self)
                        .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
                    let at = SourceLocation(file: file, line: idx + 1, column: i - start + 1)
                    let statement = words.joined(separator: " ")
                    switch words.first ?? "" {
                    case "include", "redefine", "undefine":
                        throw RulesError("'\(statement)': \(words[0]) is not allowed in a rules file (ReflectGuard must read all of it)", at: at)
                    case "define" where depth > 0:
                        throw RulesError("'\(statement)': a define inside a block is not allowed (ReflectGuard reads top-level defines only)", at: at)
                    case "define":
                        throw RulesError("'\(statement)': a define must begin its own line", at: at)
                    case "flags" where depth == 1:
                        throw RulesError("'\(statement)': table flags are not allowed ('dormant' switches the table off)", at: at)
                    case "table" where depth == 0 && words.count >= 3 && words[1] == "inet" && words[2] == "reflectguard":
                        break
                    default:
                        guard depth > 0 else {
                            throw RulesError("'\(statement)': only 'define' and 'table inet reflectguard' may stand at the top of a "
                                             + "rules file (this would act outside ReflectGuard's table)", at: at)
                        }
                    }
                }
                i += 1
            }
        }
    }

    /// Line ranges (without the newline) of the text.
    static func splitLines(_ bytes: [UInt8]) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        var start = 0
        for i in bytes.indices where bytes[i] == 0x0a {
            out.append((start, i))
            start = i + 1
        }
        if start < bytes.count { out.append((start, bytes.count)) }
        return out
    }

    static func trimmed(_ text: [UInt8]) -> ArraySlice<UInt8> {
        var s = text[...]
        while let f = s.first, f == 0x20 || f == 0x09 || f == 0x0d { s = s.dropFirst() }
        while let l = s.last, l == 0x20 || l == 0x09 || l == 0x0d { s = s.dropLast() }
        return s
    }

    /// `chain NAME {` → NAME.
    static func chainName(_ line: ArraySlice<UInt8>) -> String? { blockName("chain", line) }

    /// `KEYWORD NAME {` → NAME.
    static func blockName(_ keyword: Substring, _ line: ArraySlice<UInt8>) -> String? {
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard words.count >= 2, words[0] == keyword else { return nil }
        let name = words[1].hasSuffix("{") ? words[1].dropLast() : words[1]
        return name.isEmpty ? nil : String(name)
    }

    /// Net `{` minus `}` on a line, outside comments and quoted strings.
    static func braceDelta(_ text: [UInt8]) -> Int {
        var delta = 0
        var quoted = false
        for b in text {
            if b == 0x22 { quoted.toggle(); continue }
            if quoted { continue }
            if b == 0x23 { break }
            if b == 0x7b { delta += 1 } else if b == 0x7d { delta -= 1 }
        }
        return delta
    }

    /// `define NAME = VALUE`, where VALUE runs to the end of the line, or over several lines
    /// while a `{` is open.
    static func scanDefine(_ bytes: [UInt8], lines: [(Int, Int)], at lineIndex: Int,
                           file: String) throws(RulesError) -> Define {
        let (start, end) = lines[lineIndex]
        let lineNo = lineIndex + 1
        var i = start
        func loc(_ at: Int) -> SourceLocation { SourceLocation(file: file, line: lineNo, column: at - start + 1) }
        while bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
        i += 6
        while i < end, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
        let nameStart = i
        while i < end, isIdentByte(bytes[i]) { i += 1 }
        guard i > nameStart else { throw RulesError("expected a name after 'define'", at: loc(i)) }
        let name = String(decoding: bytes[nameStart..<i], as: UTF8.self)
        while i < end, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
        guard i < end, bytes[i] == 0x3d else { throw RulesError("expected '=' after 'define \(name)'", at: loc(i)) }
        i += 1
        while i < end, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
        let valueStart = i
        let valueColumn = i - start + 1
        var depth = 0
        var quoted = false
        var lastNonBlank = i
        var value: [UInt8] = []
        var lineCount = 1
        var li = lineIndex
        var lineEnd = end
        scan: while true {
            while i < lineEnd {
                let b = bytes[i]
                if b == 0x22 { quoted.toggle() }
                if !quoted {
                    if b == 0x23 { break }          // comment to the end of the line
                    if b == 0x3b, depth == 0 {
                        // What follows would be a second statement the scanner never checks.
                        var k = i + 1
                        while k < lineEnd, bytes[k] == 0x20 || bytes[k] == 0x09 || bytes[k] == 0x0d || bytes[k] == 0x3b { k += 1 }
                        guard k == lineEnd || bytes[k] == 0x23 else {
                            throw RulesError("only a comment may follow ';' on a define line",
                                             at: SourceLocation(file: file, line: li + 1, column: k - lines[li].0 + 1))
                        }
                        break scan
                    }
                    if b == 0x7b { depth += 1 }
                    if b == 0x7d { depth -= 1 }
                }
                value.append(b)
                if b != 0x20 && b != 0x09 && b != 0x0d { lastNonBlank = i + 1 }
                i += 1
            }
            if depth <= 0 { break }
            li += 1
            guard li < lines.count else {
                throw RulesError("unterminated '{' in the value of '\(name)'", at: loc(valueStart))
            }
            lineCount += 1
            (i, lineEnd) = lines[li]
            value.append(0x20)
        }
        let text = String(decoding: value, as: UTF8.self).trimmingBlanks()
        guard !text.isEmpty else { throw RulesError("'define \(name)' has no value", at: loc(valueStart)) }
        return Define(name: name, value: text, range: valueStart..<max(lastNonBlank, valueStart),
                      line: lineNo, column: valueColumn, lineCount: lineCount)
    }
}

extension String {
    func trimmingBlanks() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}
