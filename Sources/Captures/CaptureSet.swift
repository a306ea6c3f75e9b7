#if canImport(Glibc)
import Glibc
#endif

/// Several capture files scored as one capture: what `tcpdump -W 10 -C 100 -w cap` leaves
/// (`cap0` … `cap9`, a ring whose oldest file is not the first by name), `-G` time-named files,
/// or a directory of them. The files are put in the order of their first frame's time, so a ring
/// reads from its oldest file on whatever the names; files without a frame go last, and ties keep
/// the order given (names in a directory are sorted first).
public enum CaptureSet {
    public struct Member: Sendable {
        public let path: String
        /// The first frame's time, nil when the file has no frame.
        public let firstTimestamp: Int64?
    }

    /// The capture files `arguments` name, in time order, and what was left out (with why): a
    /// file named directly that cannot be read as a capture is an error; a file in a named
    /// directory that is not a capture (a README, a checksum list, an output of an earlier run) is
    /// left out, and hidden files and subdirectories are not looked at.
    public static func resolve(_ arguments: [String]) throws -> (members: [Member], skipped: [String]) {
        var members: [Member] = []
        var skipped: [String] = []
        for argument in arguments {
            var st = stat()
            if argument != "-", stat(argument, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                let names = try directoryEntries(argument)
                var found = 0
                for name in names {
                    let path = argument.hasSuffix("/") ? argument + name : argument + "/" + name
                    var entry = stat()
                    guard stat(path, &entry) == 0, (entry.st_mode & S_IFMT) == S_IFREG else { continue }
                    // Opened here to tell captures from other files.
                    do {
                        members.append(try member(path))
                        found += 1
                    } catch {
                        skipped.append("\(error)")
                    }
                }
                if found == 0 { throw CaptureError("cannot read captures in \(argument): no capture file in it") }
            } else if arguments.count == 1 {
                // One file: nothing to order, and a FIFO or standard input must be read only once.
                return ([Member(path: argument, firstTimestamp: nil)], [])
            } else {
                members.append(try member(argument))
            }
        }
        guard arguments.count > 1 || members.count > 1 else { return (members, skipped) }
        // Stable: equal times keep the given order.
        let ordered = members.enumerated().sorted { a, b in
            switch (a.element.firstTimestamp, b.element.firstTimestamp) {
            case (let x?, let y?): return x != y ? x < y : a.offset < b.offset
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return a.offset < b.offset
            }
        }.map(\.element)
        return (ordered, skipped)
    }

    /// A capture file and its first frame's time. Standard input, a FIFO or a device can be read
    /// only once: not opened here (no time, so it goes last).
    static func member(_ path: String) throws -> Member {
        var st = stat()
        guard path != "-", stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            if path != "-" && access(path, R_OK) != 0 {
                throw CaptureError("cannot read capture \(path): \(String(cString: strerror(errno)))")
            }
            return Member(path: path, firstTimestamp: nil)
        }
        let reader = try CaptureReader(path: path)
        let first: Int64?
        do { first = try reader.next()?.timestamp } catch { first = nil }
        return Member(path: path, firstTimestamp: first)
    }

    /// The names in a directory, sorted, without `.`-files.
    static func directoryEntries(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            throw CaptureError("cannot read directory \(path): \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return names.sorted()
    }
}
