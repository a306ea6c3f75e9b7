#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// Standard output and error without glibc's `stdout` and `stderr`: Swift sees those as global
/// `var`s (not concurrency-safe by type), and the agent's threads all log. Error text goes to
/// descriptor 2 in one write per call, as the unbuffered `stderr` stream did; standard output
/// stays Swift's `print` (its own lock) and is flushed through `fflush(nil)`.
public enum StandardStreams {
    /// Writes `text` to standard error; false when it could not all be written (a reader that went
    /// away, EPIPE with SIGPIPE ignored; a closed descriptor, EBADF).
    @discardableResult
    public static func writeError(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            (try? writeAll(2, UnsafeRawBufferPointer(bytes), name: "write(stderr)")) != nil
        }
    }

    /// Everything printed so far reaches standard output now (a pipe's reader sees it at once).
    public static func flushOutput() { fflush(nil) }
}
