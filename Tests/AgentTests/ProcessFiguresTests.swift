import Testing
@testable import Agent

@Suite struct ProcessFiguresTests {
    /// proc(5): the command name may hold spaces and parentheses; fields count from the last ')'.
    @Test func statFieldsAreCountedFromTheLastParenthesis() throws {
        let stat = "4242 (reflect guard) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 123400 481579008 30258 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
        let p = try #require(ProcessFigures.parse(stat: stat, bootTime: 1_700_000_000, ticksPerSecond: 100, pageSize: 4096,
                                                  openFDs: 12, maxFDs: 1024))
        #expect(p.cpuSeconds == 3.0)                       // (250 + 50) ticks
        #expect(p.startTimeSeconds == 1_700_001_234)       // boot + 123400 ticks
        #expect(p.virtualBytes == 481_579_008)
        #expect(p.residentBytes == 30258 * 4096)
        #expect(ProcessFigures.parse(stat: "4242 (cut) S 1 2", bootTime: 0, ticksPerSecond: 100, pageSize: 4096, openFDs: 0, maxFDs: 0) == nil)
    }

    /// This test process's own figures, read as the agent reads its own.
    @Test func ownFiguresAreRead() throws {
        let p = try #require(ProcessFigures.read())
        #expect(p.residentBytes > 1_000_000)
        #expect(p.openFDs >= 3 && UInt64(p.openFDs) <= p.maxFDs)
        #expect(p.cpuSeconds > 0)
    }

    @Test func labelValuesAreEscaped() {
        #expect(MetricsRegistry.escapeLabel("a\"b\\c\nd") == "a\\\"b\\\\c\\nd")
    }
}
