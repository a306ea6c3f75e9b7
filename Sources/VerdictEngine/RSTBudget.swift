import PacketParser

/// A slot keyed by one address or prefix.
protocol AddressKeyed: TableSlot where Key == SIMD16<UInt8> {
    var key: SIMD16<UInt8> { get }
}

extension AddressKeyed {
    @inline(__always) func hasKey(_ k: SIMD16<UInt8>) -> Bool { sameBytes(key, k) }
    func hash(_ seed: KeyedHash) -> UInt64 { seed.hash(key) }
}

/// A slot whose `tokens` refill at a rate up to a burst (`Engine.refill` keeps them).
protocol TokenSlot: AddressKeyed {
    var lastSeen: UInt32 { get set }
    init(key: SIMD16<UInt8>, tokens: Float, now: UInt32)
    /// Adds `seconds` of refill at `rate`, capped at `burst`.
    mutating func refill(seconds: Float, rate: Float, burst: Float, holdFloor: Float)
    var tokens: Float { get }
}

extension Bucket: TokenSlot {
    init(key: SIMD16<UInt8>, tokens: Float, now: UInt32) { self.init(key: key, tokens: tokens, lastSeen: now) }

    @inline(__always)
    mutating func refill(seconds: Float, rate: Float, burst: Float, holdFloor: Float) {
        tokens = min(burst, tokens + seconds * rate)
    }
}

/// The RST budget of one protected address, /24 or /64, or protected network: the static
/// token bucket (the ceiling, `rst_rate` and its kin), and what the engine learns of the untracked
/// RSTs it normally gets, so a flood spread too thin for the ceiling is still seen.
///
/// 48 bytes (a test checks): the address table's 65,536 slots take 3 MiB per engine, the
/// prefix table's 16,384 slots 768 KiB, one slot per protected network; nothing else grows.
struct RSTBudget: TokenSlot {
    var key: SIMD16<UInt8>
    /// The static bucket.
    var tokens: Float
    var lastSeen: UInt32
    /// The current one-second window of packet time and the untracked RSTs counted in it.
    var windowStart: UInt32
    var count: UInt32
    /// Untracked RSTs per second this key normally gets (moving average of closed windows).
    var baseline: Float
    /// The bucket that holds the key to its baseline while an RST attack covers it: refills at
    /// `max(baseline, rst_hold_rate)`, burst one second of that.
    var hold: Float
    /// Prefix and network budgets: the last time a window reached half the attack threshold, and
    /// whether an RST attack is on.
    var lastAboveMs: UInt32
    var attackActive: Bool
    /// Network budgets: the network is wider than one /24 or /64, so it has attacks of its own
    /// (one that narrow is its prefix, and one attack is reported, not two).
    var wide: Bool

    init(key: SIMD16<UInt8>, tokens: Float, now: UInt32) {
        self.key = key; self.tokens = tokens; lastSeen = now
        windowStart = now; count = 0; baseline = 0; hold = 1; lastAboveMs = now; attackActive = false; wide = false
    }

    /// The rate the hold bucket refills at.
    @inline(__always) func holdRate(_ floor: Float) -> Float { max(baseline, floor) }

    @inline(__always)
    mutating func refill(seconds: Float, rate: Float, burst: Float, holdFloor: Float) {
        tokens = min(burst, tokens + seconds * rate)
        let h = holdRate(holdFloor)
        hold = min(max(1, h), hold + seconds * h)
    }

    /// Counts one untracked RST. Closing a window folds its rate into the baseline, unless an
    /// attack covers the key (`frozen`): a flood must not teach the engine that floods are normal.
    /// `alpha` is how fast the baseline follows; the rise is capped at twice the baseline plus
    /// `slack` per window, so even unfrozen a flood lifts it only slowly.
    @inline(__always)
    mutating func countUntracked(_ ms: UInt32, alpha: Float, slack: Float, frozen: Bool) {
        if age(ms, since: windowStart) >= 1000 { closeWindow(ms, alpha: alpha, slack: slack, frozen: frozen) }
        count &+= 1
    }

    @inline(never)
    mutating func closeWindow(_ ms: UInt32, alpha: Float, slack: Float, frozen: Bool) {
        if !frozen {
            let rate = Float(count) / (Float(age(ms, since: windowStart)) / 1000)
            baseline += alpha * (min(rate, 2 * baseline + slack) - baseline)
        }
        count = 0
        windowStart = ms
    }

    /// Untracked RSTs in the current window above which an RST attack starts.
    @inline(__always) func threshold(factor: Float, floor: Float) -> Float { max(floor, factor * baseline) }
}
