#if canImport(Glibc)
import Glibc
#endif
import PacketParser

/// Capture files read as one capture (a `CaptureSet`'s members, in their order): frames that
/// match the filter, parsed, frame numbers running on across the files. A file that fails part-way
/// (cut short, a malformed block) ends with a warning after its frames before the failure, and the
/// next file follows; with one file, the failure ends the stream (thrown) as it always has. A frame
/// of a link type ReflectGuard cannot read counts, with no IP.
public struct CaptureFileSource: FrameSource {
    private let paths: [String]
    private let filter: PacketFilter?
    private let warn: (String) -> Void
    private let fileStarted: (_ index: Int, _ firstFrame: Int) -> Void
    private var index = 0
    private var reader: CaptureReader?
    /// Frames handed out so far.
    public private(set) var produced = 0
    private var names: [String] = []

    /// `first` is `paths[0]` already opened (so a bad first file fails before any output is
    /// made). `warn` gets one line per file left or cut short; `fileStarted` is called with each
    /// file's index and the number its first frame will have, before that frame is handed out.
    public init(paths: [String], first: CaptureReader, filter: PacketFilter?, warn: @escaping (String) -> Void,
                fileStarted: @escaping (_ index: Int, _ firstFrame: Int) -> Void = { _, _ in }) {
        self.paths = paths
        self.filter = filter
        self.warn = warn
        self.fileStarted = fileStarted
        reader = first
        fileStarted(0, 1)
    }

    /// The link type names of the files read so far, first seen first.
    public var linkTypeNames: [String] {
        var all = names
        for n in reader?.linkTypeNames ?? [] where !all.contains(n) { all.append(n) }
        return all
    }

    private mutating func closeReader() {
        for n in reader?.linkTypeNames ?? [] where !names.contains(n) { names.append(n) }
        reader = nil
    }

    public mutating func nextFrame(into packet: inout ParsedPacket) throws -> Int64? {
        while true {
            if reader == nil {
                index += 1
                guard index < paths.count else { return nil }
                fileStarted(index, produced + 1)
                do { reader = try CaptureReader(path: paths[index]) } catch {
                    warn("\(error); continuing with the next file")
                    continue
                }
            }
            let frame: CapturedFrame
            do {
                guard let f = try reader!.next() else {
                    closeReader()
                    continue
                }
                frame = f
                if let filter, try !filter.matches(frame) { continue }
            } catch {
                guard paths.count > 1 else { throw error }
                warn("\(error); its frames before that are scored, continuing with the next file")
                closeReader()
                continue
            }
            if let link = frame.link {
                PacketParser.parse(frame.bytes, link: link, into: &packet)
            } else {
                packet = ParsedPacket()
            }
            produced += 1
            return frame.timestamp
        }
    }
}

/// A live interface as a frame source, until `shouldStop` says so or `duration` seconds have
/// passed (by the monotonic clock). Between frames, and at least once per read timeout, `tick` is
/// called about once a second (for a status line: it runs on the thread that scores).
public struct LiveFrameSource: FrameSource {
    private let capture: LiveCapture
    private let duration: Double?
    private let shouldStop: () -> Bool
    private let tick: () -> Void
    private let start: Double
    private var lastTick: Double

    public init(_ capture: LiveCapture, duration: Double?, shouldStop: @escaping () -> Bool,
                tick: @escaping () -> Void = {}) {
        self.capture = capture
        self.duration = duration
        self.shouldStop = shouldStop
        self.tick = tick
        start = Self.monotonicSeconds()
        lastTick = start
    }

    public mutating func nextFrame(into packet: inout ParsedPacket) throws -> Int64? {
        while !shouldStop() {
            let now = Self.monotonicSeconds()
            if let duration, now - start >= duration { return nil }
            if now - lastTick >= 1 {
                lastTick = now
                tick()
            }
            switch try capture.next() {
            case .timeout:
                continue
            case .frame(let frame):
                PacketParser.parse(frame.bytes, link: capture.linkType, into: &packet)
                return frame.timestamp
            }
        }
        return nil
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
