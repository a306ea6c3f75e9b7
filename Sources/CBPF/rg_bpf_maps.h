// The layout of the XDP path's maps, shared by the BPF programs (bpf/reflectguard.bpf.c, built
// by scripts/embed-bpf.sh) and the agent that loads them and writes the tries: one definition,
// so the two sides cannot disagree on a key. Addresses and ports in network byte order, as they
// sit in the packet; times are bpf_ktime_get_ns(), which is CLOCK_MONOTONIC.
#ifndef RG_BPF_MAPS_H
#define RG_BPF_MAPS_H

#include <linux/types.h>

// A SYN a protected host sent, keyed from the protected side: the SYN-ACK that answers it
// carries the same four values with source and destination swapped.
struct rg_pending4_key {
	__u32 protected_addr;
	__u32 remote_addr;
	__u16 protected_port;
	__u16 remote_port;
};

struct rg_pending6_key {
	__u8 protected_addr[16];
	__u8 remote_addr[16];
	__u16 protected_port;
	__u16 remote_port;
};

// The engine's FlowEntry, reduced to what the SYN-ACK check reads: the ISN and the SYN's data
// (TCP Fast Open), when the latest copy of the SYN went out, and whether its SYN-ACK was seen.
struct rg_pending_value {
	__u64 last_ns;
	__u32 isn;
	__u16 syn_payload;
	__u16 flags;
};

#define RG_PENDING_SYNACK_SEEN 1

// LPM trie keys (BPF_MAP_TYPE_LPM_TRIE wants the prefix length first).
struct rg_lpm4_key {
	__u32 prefixlen;
	__u32 addr;
};

struct rg_lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// An armed victim prefix: the program drops for it only until `expires_ns`, so a prefix the
// agent stops renewing (it died, kill -9) disarms by itself.
struct rg_armed_value {
	__u64 expires_ns;
};

// Written by the agent once after load (array map, index 0). The horizons are the engine's:
// a SYN-ACK is solicited within synack_horizon of the latest SYN; once one was seen the flow
// lives for established_horizon.
struct rg_config {
	__u64 synack_horizon_ns;
	__u64 established_horizon_ns;
};

// Per-CPU counters, one slot per outcome (the agent sums the CPUs into its metrics).
enum rg_counter {
	RG_SYN_RECORDED = 0,      // syn-tracked: a protected host's SYN recorded
	RG_SYNACK_SOLICITED = 1,  // solicited-synack: answers a recorded SYN, passed
	RG_SYNACK_UNSOLICITED = 2,// unsolicited-synack: to an armed prefix, answers none: dropped
	RG_ALLOWLISTED = 3,       // allowlisted: a SYN-ACK to an armed prefix with an allowlisted end
	RG_NOT_ARMED = 4,         // a SYN-ACK to a prefix not armed (or expired): passed to nft
	RG_UNPARSED = 5,          // IP fragment, IPv6 header chain past the walk, short header: passed
	RG_COUNTERS = 6,
};

#endif
