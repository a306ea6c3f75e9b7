import Foundation
import Testing
@testable import NftBackend

/// What a child tool (iptables-nft) inherits from the agent: nothing but its three standard
/// descriptors, whatever the agent holds open without FD_CLOEXEC at that moment.
@Suite struct SpawnTests {
    @Test func aChildInheritsOnlyItsStandardDescriptors() throws {
        // An open descriptor without close-on-exec, as an accepted socket is for one call.
        let leaky = open("/dev/null", O_RDONLY)
        try #require(leaky > 2)
        defer { close(leaky) }
        #expect(fcntl(leaky, F_GETFD) & FD_CLOEXEC == 0)
        // ls opens the directory it lists, so allow one descriptor of its own beyond 0-2.
        let r = try Spawn.run(["/bin/ls", "/proc/self/fd"])
        #expect(r.status == 0, "\(r.output)")
        let fds = r.output.split(separator: "\n").compactMap { Int($0) }.filter { $0 > 2 }
        // Inherited, \(leaky) would be one more beside ls's own.
        #expect(fds.count <= 1, "the child saw descriptors \(fds) (the agent's \(leaky) among them)")
    }
}
