// The C side of NFQUEUE: libnetfilter_queue's libmnl-based API (see the library's
// examples/nf-queue.c) plus libmnl.
//
// Order matters: glibc's socket/in headers must come before any <linux/*.h>, or the two
// definitions of struct in6_addr and friends clash when test targets import this module.
#ifndef REFLECTGUARD_CNETFILTERQUEUE_SHIM_H
#define REFLECTGUARD_CNETFILTERQUEUE_SHIM_H

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <endian.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

// MNL_SOCKET_BUFFER_SIZE is a function-like macro over sysconf(); Swift cannot import it.
// Remove when Swift imports function-like macros.
static inline size_t rg_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }

// NFQA_MAX is an enum-derived macro ((__NFQA_MAX - 1)) that Swift does not import.
static inline int rg_nfqa_max(void) { return NFQA_MAX; }

// NLMSG_* helpers are function-like macros.
static inline int rg_nlmsg_ok(const struct nlmsghdr *nlh, int len) { return mnl_nlmsg_ok(nlh, len); }

// The NFQA_CFG_F_* flags are shift expressions; Swift's macro importer skips some of those, and
// the values are kernel ABI, so name them once here.
static const uint32_t rg_nfqa_cfg_f_fail_open = NFQA_CFG_F_FAIL_OPEN;
static const uint32_t rg_nfqa_cfg_f_gso = NFQA_CFG_F_GSO;

// The kernel's packet timestamp is two big-endian 64-bit fields; read them here rather than
// re-declaring the struct layout in Swift. Nanoseconds since the epoch (CLOCK_REALTIME).
static inline int64_t rg_nfq_timestamp_ns(const struct nlattr *attr) {
    const struct nfqnl_msg_packet_timestamp *ts = mnl_attr_get_payload(attr);
    return (int64_t)be64toh(ts->sec) * 1000000000LL + (int64_t)be64toh(ts->usec) * 1000LL;
}

// NFQA_PACKET_HDR: the packet id is big-endian on the wire.
static inline uint32_t rg_nfq_packet_id(const struct nlattr *attr) {
    const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr);
    return ntohl(ph->packet_id);
}

// recvmmsg and struct mmsghdr are _GNU_SOURCE-only in glibc's headers, and Swift's Glibc module is
// built without it. Declare the same layout under our own name and bind it to the libc symbol.
struct rg_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
extern int rg_recvmmsg(int fd, struct rg_mmsghdr *vec, unsigned int vlen, int flags,
                       struct timespec *timeout) __asm__("recvmmsg");
// MSG_WAITFORONE (linux/socket.h): block for the first message only.
static const int rg_msg_waitforone = 0x10000;

_Static_assert(sizeof(struct rg_mmsghdr) == sizeof(struct msghdr) + 8, "glibc struct mmsghdr layout");
_Static_assert(sizeof(struct nfqnl_msg_packet_timestamp) == 16, "kernel ABI: two be64 fields");

#endif
