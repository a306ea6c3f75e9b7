import Foundation
import Testing
import TestSupport

/// The Debian package on a clean machine: scripts/package.sh builds it, scripts/package-check.sh
/// installs it with dpkg in a network namespace with a private mount namespace in which the
/// Swift toolchain's directory is hidden (and /etc, /usr, /var are throwaway overlays), runs the
/// unit's command lines as the unit would, reloads a good and a broken configuration, and removes
/// it. `RG_PACKAGE_DEB` names a package already built (skips the build).
@Suite(.serialized) struct PackageTests {
    static let checks = [
        "toolchain-hidden", "dpkg-install", "version", "libraries", "install-enforces-nothing", "conffile",
        "man-page", "completion", "unit-type-notify", "unconfigured-refuses", "exec-start-pre",
        "exec-start-ready-with-rules", "journald-native", "reload-applied", "reload-notified", "reload-needs-owner", "reload-refused",
        "rules-unchanged", "agent-still-running", "check-refuses-broken", "dpkg-remove", "agent-stopped",
        "no-rule-left", "remove-keeps-conffile", "dpkg-purge",
    ]

    @Test(.enabled(if: Env.enabled && (TestEnvironment.which("dpkg-deb") != nil || TestEnvironment.isCI)))
    func packageInstallsStartsReloadsAndRemovesCleanly() throws {
        try Env.requireReady()
        let repo = TestEnvironment.packageDirectory.path
        var deb = ProcessInfo.processInfo.environment["RG_PACKAGE_DEB"] ?? ""
        if deb.isEmpty {
            let built = try sh("cd '\(repo)' && scripts/package.sh 2>&1", check: false)
            try #require(built.status == 0, "scripts/package.sh: \(built.stdout.suffix(3000))")
            let name = built.stdout.split(separator: "\n").last { $0.hasPrefix("package: reflectguard_") }
                .map { String($0.dropFirst("package: ".count).prefix(while: { $0 != " " })) }
            deb = "\(repo)/\(try #require(name, "no package named in: \(built.stdout.suffix(500))"))"
        }
        let r = try sh("'\(repo)/scripts/package-check.sh' '\(deb)' rgt-pkg-\(getpid() % 100000) 2>&1", check: false)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        for line in lines where line.hasPrefix("FAIL ") { Issue.record("\(line.prefix(3000))") }
        for check in Self.checks {
            #expect(lines.contains { $0 == "ok \(check)" || $0.hasPrefix("ok \(check) (") },
                    "check '\(check)' did not pass:\n\(r.stdout.suffix(4000))")
        }
        #expect(r.status == 0, "\(r.stdout.suffix(2000))")
        print(lines.filter { $0.hasPrefix("ok version") || $0.hasPrefix("ok reload-refused") }.joined(separator: "\n"))
    }
}
