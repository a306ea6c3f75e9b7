import Foundation
import Testing
import TestSupport

/// docs/monitoring: the alerting rules load and fire as their unit tests say (promtool), and the
/// rules and the Grafana dashboard ask only for metrics the agent exports.
@Suite struct MonitoringFilesTests {
    static let directory = TestEnvironment.packageDirectory.appendingPathComponent("docs/monitoring")

    static func promtool(_ args: [String]) throws -> (status: Int32, out: String)? {
        guard let tool = TestEnvironment.which("promtool") else {
            TestEnvironment.unavailable("promtool (scripts/setup.sh installs Debian's prometheus)")
            return nil
        }
        let r = try TestEnvironment.run(tool, args)
        return (r.status, r.out + r.err)
    }

    @Test func alertingRulesPassPromtoolCheckRules() throws {
        guard let r = try Self.promtool(["check", "rules", Self.directory.appendingPathComponent("alerts.yml").path]) else { return }
        #expect(r.status == 0, "\(r.out)")
        #expect(r.out.contains("SUCCESS"), "\(r.out)")
    }

    @Test func alertingRulesPassTheirUnitTests() throws {
        guard let r = try Self.promtool(["test", "rules", Self.directory.appendingPathComponent("alerts.test.yml").path]) else { return }
        #expect(r.status == 0, "\(r.out)")
        #expect(r.out.contains("SUCCESS"), "\(r.out)")
    }

    /// Every metric name that the alerts and the dashboard query, and every alert in the rules
    /// file, must be real: a renamed metric would leave a panel empty and an alert that never fires.
    @Test func dashboardAndAlertsQueryOnlyExportedMetrics() throws {
        let sources = try FileManager.default.contentsOfDirectory(
            atPath: TestEnvironment.packageDirectory.appendingPathComponent("Sources/Agent").path)
            .filter { $0.hasSuffix(".swift") }
            .map { try String(contentsOf: TestEnvironment.packageDirectory.appendingPathComponent("Sources/Agent/\($0)"), encoding: .utf8) }
            .joined()
        let alerts = try String(contentsOf: Self.directory.appendingPathComponent("alerts.yml"), encoding: .utf8)
        let dashboardText = try String(contentsOf: Self.directory.appendingPathComponent("grafana-dashboard.json"), encoding: .utf8)
        let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(dashboardText.utf8)) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let queries = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        #expect(queries.count >= 15, "the dashboard's panels have their queries")

        var names = Set<String>()
        let expressions = queries + alerts.split(separator: "\n").filter { $0.contains("expr:") }.map(String.init)
        for e in expressions {
            for m in e.matches(of: #/\b(reflectguard_[a-z0-9_]+|process_[a-z_]+)\b/#) { names.insert(String(m.1)) }
        }
        #expect(names.contains("reflectguard_kernel_drops_total"))
        #expect(names.count >= 15, "\(names.sorted())")
        for n in names.sorted() {
            #expect(sources.contains("\"\(n)\""), "\(n) is queried but no agent source exports it")
        }
        // The alerts: attack started, queue overload, rules missing, lost verdicts, kernel drops.
        for alert in ["ReflectGuardAttack", "ReflectGuardQueueOverload", "ReflectGuardRulesMissing",
                      "ReflectGuardLostVerdicts", "ReflectGuardKernelDropping"] {
            #expect(alerts.contains("alert: \(alert)\n"), "\(alert)")
        }
    }
}
