#if canImport(Glibc)
import Glibc
#endif
import CSystemd

/// systemd's readiness protocol (`Type=notify`), through libsystemd's sd_notify: READY=1 once the
/// rules are applied and the queues bound (so `systemctl start` returns when the router is
/// protected, and units ordered after this one start then), RELOADING=1 / READY=1 around a reload,
/// STOPPING=1 at shutdown, and a STATUS= line `systemctl status` shows. Without NOTIFY_SOCKET
/// (not under systemd) sd_notify does nothing.
enum ServiceManager {
    static func notify(_ fields: [String]) {
        _ = sd_notify(0, fields.joined(separator: "\n"))
    }

    static func ready(status: String) { notify(["READY=1", "STATUS=" + status]) }

    /// MONOTONIC_USEC lets systemd 253 and later (Type=notify-reload) match the READY=1 that
    /// ends this reload; systemd 252 ignores it.
    static func reloading() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let usec = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
        notify(["RELOADING=1", "MONOTONIC_USEC=\(usec)", "STATUS=reloading the rules and configuration"])
    }

    static func stopping() { notify(["STOPPING=1", "STATUS=stopping: removing the rules, draining the queues"]) }
}
