#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PacketParser
import Synchronization
import VerdictEngine

/// Scores a stream of frames (a capture file) through an engine and a pipeline, in order.
///
/// With one thread, frames are parsed two ahead of the one being scored so the pipeline can start
/// loading its table lines for them (`ScoringPipeline.prefetch`). With two, the source and the
/// engine run on the calling thread and the pipeline on a second one; frames cross in batches, in
/// order, and each side's state stays on its own thread, so the report is the one-thread report,
/// bit for bit (tests compare them). The pipeline's tables are most of the work and miss the
/// caches on nearly every frame; the second core overlaps that with reading and deciding.
///
/// Every source goes through here: capture files and a live interface (`score --interface`, on
/// one thread: its status line reads the pipeline between frames) are `FrameSource`s.
public enum FrameScoring {

    /// Two threads when this process may run on two cores or more, else one: pinned to one core
    /// (`taskset -c 0`), the two threads took turns and a run took up to 1.7x as long.
    public static var defaultThreads: Int { usableCores() > 1 ? 2 : 1 }

    /// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status, e.g.
    /// `0-3,6`); the online CPUs when that cannot be read.
    static func usableCores() -> Int {
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
        else { return online }
        return allowedCount(String(line.dropFirst("Cpus_allowed_list:".count))) ?? online
    }

    /// The number of CPUs in a Linux CPU list (`0-3,6`), nil when it does not parse.
    static func allowedCount(_ list: String) -> Int? {
        var total = 0
        for part in list.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",") {
            let bounds = part.split(separator: "-").map { Int($0) }
            switch bounds.count {
            case 1: guard bounds[0] != nil else { return nil }; total += 1
            case 2: guard let a = bounds[0], let b = bounds[1], b >= a else { return nil }; total += b - a + 1
            default: return nil
            }
        }
        return total > 0 ? total : nil
    }

    public static func run(engine: Engine, pipeline: ScoringPipeline, threads: Int, source: inout some FrameSource) throws {
        if threads > 1 {
            try pipelined(engine: engine, pipeline: pipeline, source: &source)
        } else {
            try inline(engine: engine, pipeline: pipeline, source: &source)
        }
    }

    /// `run` with a closure as the source (see `ClosureFrameSource`).
    public static func run(engine: Engine, pipeline: ScoringPipeline, threads: Int,
                           source: @escaping (inout ParsedPacket) throws -> Int64?) throws {
        var s = ClosureFrameSource(source)
        try run(engine: engine, pipeline: pipeline, threads: threads, source: &s)
    }

    struct Scored {
        var packet = ParsedPacket()
        var time: Int64 = 0
        var decision = Decision(.accept, .notQueued)
    }

    /// One thread: a ring of three frames, the oldest scored while the two newer are prefetched.
    static func inline(engine: Engine, pipeline: ScoringPipeline, source: inout some FrameSource) throws {
        let depth = 3
        let ring = UnsafeMutablePointer<Scored>.allocate(capacity: depth)
        ring.initialize(repeating: Scored(), count: depth)
        defer { ring.deinitialize(count: depth); ring.deallocate() }
        var oldest = 0, pending = 0
        var ended = false
        var cut: Error?
        while true {
            while !ended && pending < depth {
                let r = ring + (oldest + pending) % depth
                do {
                    if let t = try source.nextFrame(into: &r.pointee.packet) {
                        r.pointee.time = t
                        pending += 1
                    } else {
                        ended = true
                    }
                } catch {
                    cut = error
                    ended = true
                }
            }
            guard pending > 0 else { break }
            if pending > 2 { pipeline.prefetch(ring[(oldest + 2) % depth].packet, distance: 2) }
            if pending > 1 { pipeline.prefetch(ring[(oldest + 1) % depth].packet, distance: 1) }
            let r = ring + oldest
            let d = engine.decideObserved(r.pointee.packet, at: r.pointee.time, side: .unknown)
            pipeline.observe(r.pointee.packet, at: r.pointee.time, decision: d)
            oldest = (oldest + 1) % depth
            pending -= 1
        }
        if let cut { throw cut }
    }

    /// Batches in flight between the two threads: a single-producer, single-consumer ring.
    /// `produced` and `consumed` count whole batches; a batch's frames and its count are written
    /// before `produced` is released, and read after it is acquired.
    final class Handoff {
        static let batches = 4
        static let batchSize = 1024
        let frames: UnsafeMutablePointer<Scored>
        let counts: UnsafeMutablePointer<Int>
        let produced = Atomic<Int>(0)
        let consumed = Atomic<Int>(0)
        let finished = Atomic<Bool>(false)
        let pipeline: ScoringPipeline

        init(pipeline: ScoringPipeline) {
            self.pipeline = pipeline
            frames = .allocate(capacity: Self.batches * Self.batchSize)
            frames.initialize(repeating: Scored(), count: Self.batches * Self.batchSize)
            counts = .allocate(capacity: Self.batches)
            counts.initialize(repeating: 0, count: Self.batches)
        }

        deinit {
            frames.deinitialize(count: Self.batches * Self.batchSize)
            frames.deallocate()
            counts.deallocate()
        }

        func batch(_ n: Int) -> UnsafeMutablePointer<Scored> { frames + (n % Self.batches) * Self.batchSize }

        /// The consumer: scores batches in order until the producer has finished and all are done.
        func consume() {
            var next = 0
            var waits = 0
            while true {
                var available = produced.load(ordering: .acquiring)
                if available == next {
                    if finished.load(ordering: .acquiring) {
                        available = produced.load(ordering: .acquiring)
                        if available == next { return }
                    } else {
                        pause(&waits)
                        continue
                    }
                }
                waits = 0
                let b = batch(next)
                let n = counts[next % Self.batches]
                for i in 0..<n {
                    if i + 2 < n { pipeline.prefetch(b[i + 2].packet, distance: 2) }
                    if i + 1 < n { pipeline.prefetch(b[i + 1].packet, distance: 1) }
                    pipeline.observe(b[i].packet, at: b[i].time, decision: b[i].decision)
                }
                next += 1
                consumed.store(next, ordering: .releasing)
            }
        }
    }

    /// Waiting for the other thread: a few yields (it is usually a batch away), then sleeps of
    /// 100 µs so the waiting side does not burn the core or the kernel's time. With 64 yields
    /// before 50 µs sleeps and batches of 256, a run on the 5M-frame capture spent 0.5-2.1 s in
    /// the kernel and 2.2-3.4 s of wall time; with 8 yields, 100 µs and batches of 1024, 0.2-0.26 s
    /// and 2.0-2.07 s (four alternating runs each, same output).
    static func pause(_ waits: inout Int) {
        waits += 1
        if waits < 8 { sched_yield() } else { usleep(100) }
    }

    static func pipelined(engine: Engine, pipeline: ScoringPipeline, source: inout some FrameSource) throws {
        let handoff = Handoff(pipeline: pipeline)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(handoff).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Handoff>.fromOpaque(raw!).takeRetainedValue().consume()
            return nil
        }, context)
        guard rc == 0 else {
            // No second thread to be had: the same work on this one.
            Unmanaged<Handoff>.fromOpaque(context).release()
            return try inline(engine: engine, pipeline: pipeline, source: &source)
        }

        var cut: Error?
        var next = 0
        var ended = false
        var waits = 0
        while !ended {
            if next - handoff.consumed.load(ordering: .acquiring) >= Handoff.batches {
                pause(&waits)
                continue
            }
            waits = 0
            let b = handoff.batch(next)
            var n = 0
            while n < Handoff.batchSize {
                do {
                    guard let t = try source.nextFrame(into: &b[n].packet) else { ended = true; break }
                    b[n].time = t
                } catch {
                    cut = error
                    ended = true
                    break
                }
                b[n].decision = engine.decideObserved(b[n].packet, at: b[n].time, side: .unknown)
                n += 1
            }
            handoff.counts[next % Handoff.batches] = n
            next += 1
            handoff.produced.store(next, ordering: .releasing)
        }
        handoff.finished.store(true, ordering: .releasing)
        pthread_join(thread, nil)
        if let cut { throw cut }
    }
}
