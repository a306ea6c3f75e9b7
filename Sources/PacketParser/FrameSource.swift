/// Where scored frames come from, one at a time and already parsed: capture files, a live
/// interface, a test's generated frames. `score` runs every source through one loop
/// (`FrameScoring.run`); a source only reads and parses.
public protocol FrameSource {
    /// Parses the next frame into `packet` and returns its time (nanoseconds since the epoch); nil
    /// when no frame is left. A throw ends the stream (a cut capture, a failed interface): the
    /// frames before it are scored, then the error is rethrown.
    mutating func nextFrame(into packet: inout ParsedPacket) throws -> Int64?
}

/// A source from a closure with `nextFrame`'s contract, for sources too small to name.
public struct ClosureFrameSource: FrameSource {
    @usableFromInline let next: (inout ParsedPacket) throws -> Int64?

    public init(_ next: @escaping (inout ParsedPacket) throws -> Int64?) { self.next = next }

    @inlinable
    public mutating func nextFrame(into packet: inout ParsedPacket) throws -> Int64? { try next(&packet) }
}
