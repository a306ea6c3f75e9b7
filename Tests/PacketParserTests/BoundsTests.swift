#if canImport(Glibc)
import Glibc
#endif
import PacketParser
import Testing
import TestSupport

/// Both parsers never read outside the bytes they are given: every input is copied to the very
/// end of a readable page followed by a PROT_NONE page, so a read one byte too far faults and
/// fails the run instead of passing silently (as it could with an array's spare capacity).
@Suite struct BoundsTests {
    final class GuardedBuffer {
        let base: UnsafeMutableRawPointer
        let pageSize: Int

        init?() {
            pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            guard let p = mmap(nil, 2 * pageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  p != MAP_FAILED else { return nil }
            base = p
            guard mprotect(p + pageSize, pageSize, PROT_NONE) == 0 else {
                munmap(p, 2 * pageSize)
                return nil
            }
        }

        deinit { munmap(base, 2 * pageSize) }

        /// Runs `body` with `bytes` ending exactly at the guard page.
        func withTail<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) -> R) -> R {
            precondition(bytes.count <= pageSize)
            let start = base + (pageSize - bytes.count)
            bytes.withUnsafeBytes { src in
                if let s = src.baseAddress { start.copyMemory(from: s, byteCount: src.count) }
            }
            return body(UnsafeRawBufferPointer(start: start, count: bytes.count))
        }
    }

    @Test func noReadPastTheEnd() throws {
        let buffer = try #require(GuardedBuffer(), "mmap/mprotect of a guard page failed")
        var rng = SplitMix(state: 0xb0b)
        var inputs: [([UInt8], LinkType)] = ParserEdgeCaseTests.corpus.map { ($0.2, $0.1) }
        let seeds = FastPathEquivalenceTests.seeds   // built once: it is a computed list
        for (link, seed) in seeds {
            for n in 0...seed.count { inputs.append((Array(seed[0..<n]), link)) }   // every cut
        }
        for _ in 0..<50_000 {
            let (link, seed) = seeds[rng.below(seeds.count)]
            var bytes = Array(seed[0..<rng.below(seed.count + 1)])
            if !bytes.isEmpty { bytes[rng.below(bytes.count)] = rng.byte() }
            inputs.append((bytes, link))
        }
        var packet = ParsedPacket()
        var disagreements = 0
        for (bytes, link) in inputs {
            let fast = buffer.withTail(bytes) { raw -> ParsedPacket in
                PacketParser.parse(raw, link: link, into: &packet)
                return packet
            }
            let scalar = buffer.withTail(bytes) { raw -> ParsedPacket in
                ScalarParser.parse(raw, link: link, into: &packet)
                return packet
            }
            if fast != scalar { disagreements += 1 }
        }
        #expect(disagreements == 0)
    }
}
