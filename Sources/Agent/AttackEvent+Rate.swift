import VerdictEngine

extension AttackEvent {
    /// Whole-agent rate: each engine sees its queue's share of the traffic.
    func agentRate(queues: Int) -> Double { (synackDropRate + rstDropRate) * Double(max(1, queues)) }
}
