extension Engine {
    /// The bytes an engine with `policy` maps for its flow table, the one table that grows with
    /// the configuration (`syn_table_size`; the others are fixed at a few MiB). Int.max when the
    /// size cannot even be represented.
    public static func flowTableBytes(for policy: Policy) -> Int {
        GroupTable<FlowEntry>.mappedBytes(capacity: policy.synTableCapacity)
    }
}
