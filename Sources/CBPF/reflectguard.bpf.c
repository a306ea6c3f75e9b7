// SPDX-License-Identifier: GPL-2.0
// ReflectGuard's kernel fast path: the pending-SYN check of the nft `armed` chain, done at the
// driver (XDP) before the kernel builds an skb.
//
// - rg_syn_record (XDP, the inside interfaces' ingress) and rg_syn_record_tc (tc clsact egress,
//   a host's outside interface): every SYN from a protected address is recorded in an LRU hash,
//   4-tuple -> ISN, SYN data length (TCP Fast Open), time.
// - rg_synack_check (XDP, the outside interfaces' ingress): a SYN-ACK to an armed victim prefix
//   (an LPM trie the agent writes, each entry with its expiry) that answers no recorded SYN by
//   the engine's rule (ack == ISN + 1, or ISN + 1 + the SYN's data) is dropped, unless either
//   end is allowlisted. Everything else, RSTs included, passes to the stack, where the nft rules
//   and the agent decide as without this program; so does every packet whose headers this
//   program does not walk (IP fragments, an IPv6 chain longer than the walk): the nft rules walk
//   the chain themselves, so passing never lets such a packet by unjudged.
//
// Built by scripts/embed-bpf.sh (clang -target bpf), embedded in the binary.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "rg_bpf_maps.h"

char LICENSE[] SEC("license") = "GPL";

// Sizes are the defaults; the agent sets syn_table_size (pending) and its trie capacities
// before loading.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct rg_pending4_key);
	__type(value, struct rg_pending_value);
} rg_pending4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct rg_pending6_key);
	__type(value, struct rg_pending_value);
} rg_pending6 SEC(".maps");

#define RG_LPM(name, keytype, valtype)                   \
	struct {                                         \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);     \
		__uint(max_entries, 4096);               \
		__uint(map_flags, BPF_F_NO_PREALLOC);    \
		__type(key, keytype);                    \
		__type(value, valtype);                  \
	} name SEC(".maps")

RG_LPM(rg_protected4, struct rg_lpm4_key, __u8);
RG_LPM(rg_protected6, struct rg_lpm6_key, __u8);
RG_LPM(rg_allow4, struct rg_lpm4_key, __u8);
RG_LPM(rg_allow6, struct rg_lpm6_key, __u8);
RG_LPM(rg_armed4, struct rg_lpm4_key, struct rg_armed_value);
RG_LPM(rg_armed6, struct rg_lpm6_key, struct rg_armed_value);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rg_config);
} rg_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RG_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} rg_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&rg_counters, &which);
	if (c)
		*c += 1; // per-CPU slot: no other CPU writes it
}

// What the walk found: a TCP header over IPv4 or IPv6, or a reason to pass.
enum walk { W_OTHER, W_UNPARSED, W_TCP4, W_TCP6 };

struct tcp_at {
	struct tcphdr *tcp;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
	__u32 payload; // TCP data length, from the IP length fields
};

// The IPv6 extension headers walked before giving up (DPDK's rte_net stops at 5; the agent's
// parser walks 32, the nft rules the whole chain): a longer chain passes on to them.
#define RG_IPV6_EXT_MAX 8

static __always_inline enum walk find_tcp(void *data, void *data_end, struct tcp_at *at)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return W_OTHER;
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;
	// Up to two VLAN tags (802.1Q, 802.1ad QinQ).
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		__u16 *tag = l3;
		if ((void *)(tag + 2) > data_end)
			return W_OTHER;
		proto = tag[1];
		l3 = tag + 2;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return W_OTHER;
		if (ip->protocol != IPPROTO_TCP)
			return W_OTHER;
		__u32 ihl = ip->ihl * 4;
		// Fragments are judged by the nft `fragments` chain (no reassembly here either).
		if (ip->version != 4 || ihl < 20 || (ip->frag_off & bpf_htons(0x3fff)))
			return W_UNPARSED;
		struct tcphdr *tcp = l3 + ihl;
		if ((void *)(tcp + 1) > data_end)
			return W_UNPARSED;
		__u32 doff = tcp->doff * 4;
		__u32 total = bpf_ntohs(ip->tot_len);
		if (doff < 20 || total < ihl + doff)
			return W_UNPARSED;
		at->tcp = tcp;
		at->ip4 = ip;
		at->payload = total - ihl - doff;
		return W_TCP4;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return W_OTHER;
		__u8 next = ip6->nexthdr;
		__u32 off = sizeof(*ip6); // bytes of IPv6 header and extension headers
		for (int i = 0; i < RG_IPV6_EXT_MAX; i++) {
			if (next == IPPROTO_TCP)
				break;
			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
			    next != IPPROTO_AH) {
				// A fragment header, ESP, or anything else: not walked here.
				if (next == IPPROTO_FRAGMENT || next == IPPROTO_ESP)
					return W_UNPARSED;
				return W_OTHER;
			}
			if (off > 2048)
				return W_UNPARSED;
			__u8 *h = l3 + off;
			if ((void *)(h + 2) > data_end)
				return W_UNPARSED;
			__u32 len = next == IPPROTO_AH ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
			next = h[0];
			off += len;
		}
		if (next != IPPROTO_TCP || off > 2048)
			return W_UNPARSED;
		struct tcphdr *tcp = l3 + off;
		if ((void *)(tcp + 1) > data_end)
			return W_UNPARSED;
		__u32 doff = tcp->doff * 4;
		__u32 total = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		if (doff < 20 || total < off + doff)
			return W_UNPARSED;
		at->tcp = tcp;
		at->ip6 = ip6;
		at->payload = total - off - doff;
		return W_TCP6;
	}
	return W_OTHER;
}

static __always_inline void record_syn(void *data, void *data_end)
{
	struct tcp_at at = {};
	enum walk w = find_tcp(data, data_end, &at);
	if (w != W_TCP4 && w != W_TCP6)
		return;
	struct tcphdr *tcp = at.tcp;
	if (!tcp->syn || tcp->ack)
		return;
	struct rg_pending_value v = {
		.last_ns = bpf_ktime_get_ns(),
		.isn = bpf_ntohl(tcp->seq),
		.syn_payload = at.payload > 0xffff ? 0xffff : at.payload,
	};
	if (w == W_TCP4) {
		struct rg_lpm4_key p = { .prefixlen = 32, .addr = at.ip4->saddr };
		if (!bpf_map_lookup_elem(&rg_protected4, &p))
			return;
		struct rg_pending4_key k = {
			.protected_addr = at.ip4->saddr, .remote_addr = at.ip4->daddr,
			.protected_port = tcp->source, .remote_port = tcp->dest,
		};
		// A retransmitted SYN (same ISN) keeps whether its SYN-ACK was seen, as the engine does.
		struct rg_pending_value *old = bpf_map_lookup_elem(&rg_pending4, &k);
		if (old && old->isn == v.isn)
			v.flags = old->flags;
		bpf_map_update_elem(&rg_pending4, &k, &v, BPF_ANY);
	} else {
		struct rg_lpm6_key p = { .prefixlen = 128 };
		__builtin_memcpy(p.addr, &at.ip6->saddr, 16);
		if (!bpf_map_lookup_elem(&rg_protected6, &p))
			return;
		struct rg_pending6_key k = { .protected_port = tcp->source, .remote_port = tcp->dest };
		__builtin_memcpy(k.protected_addr, &at.ip6->saddr, 16);
		__builtin_memcpy(k.remote_addr, &at.ip6->daddr, 16);
		struct rg_pending_value *old = bpf_map_lookup_elem(&rg_pending6, &k);
		if (old && old->isn == v.isn)
			v.flags = old->flags;
		bpf_map_update_elem(&rg_pending6, &k, &v, BPF_ANY);
	}
	count(RG_SYN_RECORDED);
}

SEC("xdp")
int rg_syn_record(struct xdp_md *ctx)
{
	record_syn((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	return XDP_PASS;
}

SEC("tc")
int rg_syn_record_tc(struct __sk_buff *skb)
{
	// A SYN is small; make sure its headers are in the linear part before reading them.
	__u32 want = skb->len < 256 ? skb->len : 256;
	if ((long)skb->data_end - (long)skb->data < want)
		bpf_skb_pull_data(skb, want);
	record_syn((void *)(long)skb->data, (void *)(long)skb->data_end);
	return TC_ACT_OK;
}

// Whether a SYN-ACK with this ack answers the recorded SYN (Engine.inboundSynack): ack == ISN + 1
// or ISN + 1 + the SYN's data, within synack_horizon of the latest SYN, or within
// established_horizon once a SYN-ACK was seen. Marks the flow seen.
static __always_inline int answers(struct rg_pending_value *v, __u32 ack, __u64 now)
{
	if (!v)
		return 0;
	__u32 k = 0;
	struct rg_config *cfg = bpf_map_lookup_elem(&rg_config, &k);
	if (!cfg)
		return 0;
	if (ack != v->isn + 1 && !(v->syn_payload && ack == v->isn + 1 + v->syn_payload))
		return 0;
	__u64 age = now > v->last_ns ? now - v->last_ns : 0;
	int seen = v->flags & RG_PENDING_SYNACK_SEEN;
	if (age > (seen ? cfg->established_horizon_ns : cfg->synack_horizon_ns))
		return 0;
	v->flags |= RG_PENDING_SYNACK_SEEN;
	v->last_ns = now;
	return 1;
}

static __always_inline int armed(struct rg_armed_value *a, __u64 now)
{
	return a && a->expires_ns > now;
}

SEC("xdp")
int rg_synack_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcp_at at = {};
	enum walk w = find_tcp(data, data_end, &at);
	if (w == W_UNPARSED) {
		count(RG_UNPARSED);
		return XDP_PASS;
	}
	if (w == W_OTHER)
		return XDP_PASS;
	struct tcphdr *tcp = at.tcp;
	if (!tcp->syn || !tcp->ack)
		return XDP_PASS;
	__u64 now = bpf_ktime_get_ns();
	__u32 ack = bpf_ntohl(tcp->ack_seq);

	if (w == W_TCP4) {
		struct rg_lpm4_key dst = { .prefixlen = 32, .addr = at.ip4->daddr };
		if (!armed(bpf_map_lookup_elem(&rg_armed4, &dst), now)) {
			count(RG_NOT_ARMED);
			return XDP_PASS;
		}
		struct rg_lpm4_key src = { .prefixlen = 32, .addr = at.ip4->saddr };
		if (bpf_map_lookup_elem(&rg_allow4, &src) || bpf_map_lookup_elem(&rg_allow4, &dst)) {
			count(RG_ALLOWLISTED);
			return XDP_PASS;
		}
		struct rg_pending4_key k = {
			.protected_addr = at.ip4->daddr, .remote_addr = at.ip4->saddr,
			.protected_port = tcp->dest, .remote_port = tcp->source,
		};
		if (answers(bpf_map_lookup_elem(&rg_pending4, &k), ack, now)) {
			count(RG_SYNACK_SOLICITED);
			return XDP_PASS;
		}
	} else {
		struct rg_lpm6_key dst = { .prefixlen = 128 };
		__builtin_memcpy(dst.addr, &at.ip6->daddr, 16);
		if (!armed(bpf_map_lookup_elem(&rg_armed6, &dst), now)) {
			count(RG_NOT_ARMED);
			return XDP_PASS;
		}
		struct rg_lpm6_key src = { .prefixlen = 128 };
		__builtin_memcpy(src.addr, &at.ip6->saddr, 16);
		if (bpf_map_lookup_elem(&rg_allow6, &src) || bpf_map_lookup_elem(&rg_allow6, &dst)) {
			count(RG_ALLOWLISTED);
			return XDP_PASS;
		}
		struct rg_pending6_key k = { .protected_port = tcp->dest, .remote_port = tcp->source };
		__builtin_memcpy(k.protected_addr, &at.ip6->daddr, 16);
		__builtin_memcpy(k.remote_addr, &at.ip6->saddr, 16);
		if (answers(bpf_map_lookup_elem(&rg_pending6, &k), ack, now)) {
			count(RG_SYNACK_SOLICITED);
			return XDP_PASS;
		}
	}
	count(RG_SYNACK_UNSOLICITED);
	return XDP_DROP;
}
