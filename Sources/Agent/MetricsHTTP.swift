/// The part of HTTP/1.1 (RFC 9112) the metrics endpoint speaks: request heads without bodies,
/// GET or HEAD of /metrics, responses with a Content-Length. Pure: bytes in, bytes out.
enum MetricsHTTP {
    /// One parsed request head.
    struct Request: Equatable {
        var method: Substring
        /// The path without its query.
        var path: Substring
        /// 0 or 1 (HTTP/1.0, HTTP/1.1).
        var minorVersion: Int
        /// The client wants the connection kept after the response (RFC 9112 §9.3: the default
        /// in 1.1 unless `Connection: close`; in 1.0 only with `Connection: keep-alive`).
        var keepAlive: Bool
        /// A body follows the head (Content-Length above 0, or any Transfer-Encoding). The
        /// endpoint reads no bodies, so such a connection is closed after the answer instead of
        /// reading the body as the next request.
        var hasBody: Bool
    }

    /// Why a head could not be answered normally.
    enum Malformed: Error, Equatable {
        case badRequestLine
        case unsupportedVersion
    }

    /// The index just past the blank line that ends a head in `bytes`, or nil while it has not
    /// all arrived. A bare LF ends a line too (RFC 9112 §2.2). `from` is where an earlier search
    /// stopped, so a head that trickles in is not scanned again from the start every byte.
    static func headEnd(_ bytes: [UInt8], from: Int = 0) -> Int? {
        var i = max(from, 0)
        while i < bytes.count {
            if bytes[i] == lf {
                if i + 1 < bytes.count, bytes[i + 1] == lf { return i + 2 }
                if i + 2 < bytes.count, bytes[i + 1] == cr, bytes[i + 2] == lf { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    /// Where `headEnd` may resume once more bytes arrive: the blank line may start at the last
    /// line feed seen, so back up two bytes (LF CR) from the end.
    static func resumePoint(_ count: Int) -> Int { max(count - 2, 0) }

    /// The number of CR and LF bytes before the request line: a server ignores empty lines there
    /// (RFC 9112 §2.2), which clients send after a request they think ended with one.
    static func leadingEmptyLines(_ bytes: [UInt8]) -> Int {
        bytes.prefix { $0 == cr || $0 == lf }.count
    }

    static func parse(_ head: ArraySlice<UInt8>) -> Result<Request, Malformed> {
        // Lines are split as bytes: in a Swift String, CR LF is one Character, not "\r" + "\n".
        var lines = head.split(separator: lf, omittingEmptySubsequences: false).map { line in
            Substring(decoding: line.last == cr ? line.dropLast() : line, as: UTF8.self)
        }
        let requestLine = lines.isEmpty ? "" : lines.removeFirst()
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, let target = originForm(parts[1]) else { return .failure(.badRequestLine) }
        let minor: Int
        switch parts[2] {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        case let v where v.hasPrefix("HTTP/"): return .failure(.unsupportedVersion)
        default: return .failure(.badRequestLine)
        }
        var connection: [Substring] = []
        var hasBody = false
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces
            switch name {
            case "connection": connection += value.split(separator: ",").map { $0.trimmingSpaces }
            case "content-length": hasBody = hasBody || value != "0"
            case "transfer-encoding": hasBody = true
            default: break
            }
        }
        let tokens = connection.map { $0.lowercased() }
        let keepAlive = minor == 1 ? !tokens.contains("close") : tokens.contains("keep-alive")
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return .success(Request(method: parts[0], path: path, minorVersion: minor, keepAlive: keepAlive, hasBody: hasBody))
    }

    /// The path-and-query of a request target; an absolute-form target (`http://host/metrics`,
    /// which a server must accept, RFC 9112 §3.2.2) loses its scheme and authority. Nil for
    /// anything else (`*`, authority-form).
    private static func originForm(_ target: Substring) -> Substring? {
        if target.hasPrefix("/") { return target }
        let rest: Substring
        if target.hasPrefix("http://") { rest = target.dropFirst(7) } else if target.hasPrefix("https://") { rest = target.dropFirst(8) } else { return nil }
        guard let slash = rest.firstIndex(of: "/") else { return rest.isEmpty ? nil : "/" }
        return rest[slash...]
    }

    /// A response to send in full, and whether the connection ends after it.
    struct Answer {
        var bytes: [UInt8]
        var close: Bool
        var status: Int
    }

    /// The answer to one head. `render` is called only for a request of /metrics, once.
    static func answer(_ head: ArraySlice<UInt8>, render: () -> String) -> Answer {
        let request: Request
        switch parse(head) {
        case .failure(.badRequestLine): return response(400, "Bad Request", "bad request line\n", close: true)
        case .failure(.unsupportedVersion): return response(505, "HTTP Version Not Supported", "HTTP/1.0 or HTTP/1.1\n", close: true)
        case .success(let r): request = r
        }
        let close = !request.keepAlive || request.hasBody
        let keepAliveHeader = !close && request.minorVersion == 0
        let head = request.method == "HEAD"
        guard request.method == "GET" || head else {
            return response(405, "Method Not Allowed", "GET or HEAD\n", close: close, extra: "Allow: GET, HEAD\r\n",
                            keepAliveHeader: keepAliveHeader)
        }
        guard request.path == "/metrics" else {
            return response(404, "Not Found", "not found: try /metrics\n", close: close, omitBody: head,
                            keepAliveHeader: keepAliveHeader)
        }
        return response(200, "OK", render(), close: close, contentType: "text/plain; version=0.0.4; charset=utf-8",
                        omitBody: head, keepAliveHeader: keepAliveHeader)
    }

    /// 431 (RFC 6585 §5) for a head longer than the endpoint reads; the connection ends.
    static let headTooLarge = response(431, "Request Header Fields Too Large", "request head too large\n", close: true)

    static func response(_ status: Int, _ reason: String, _ body: String, close: Bool,
                         contentType: String = "text/plain; charset=utf-8", extra: String = "",
                         omitBody: Bool = false, keepAliveHeader: Bool = false) -> Answer {
        var head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n" + extra
        if close { head += "Connection: close\r\n" } else if keepAliveHeader { head += "Connection: keep-alive\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if !omitBody { bytes += body.utf8 }
        return Answer(bytes: bytes, close: close, status: status)
    }

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
}

private extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }
}
