// The C side of ctnetlink (the kernel's conntrack table over netlink) through libmnl: the
// message and attribute numbers of <linux/netfilter/nfnetlink_conntrack.h>, read raw. Debian's
// libnetfilter-conntrack would parse the same attributes; the few this agent needs (the original
// tuple and the TCP state) are simpler to read than to carry one more library for.
//
// Order matters: glibc's socket/in headers must come before any <linux/*.h> (struct clashes).
#ifndef REFLECTGUARD_CCONNTRACK_SHIM_H
#define REFLECTGUARD_CCONNTRACK_SHIM_H

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <sys/eventfd.h>

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

// Message types and groups are enum members and shift expressions; name them once here, as
// kernel ABI values Swift reads without the macro importer's help.
static const uint16_t rg_ct_msg_new = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
static const uint16_t rg_ct_msg_get = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
static const uint16_t rg_ct_msg_delete = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
// mnl_socket_bind's group mask: bit (group - 1) for each NFNLGRP_CONNTRACK_* group.
static const unsigned int rg_ct_event_groups =
    (1u << (NFNLGRP_CONNTRACK_NEW - 1)) | (1u << (NFNLGRP_CONNTRACK_UPDATE - 1)) |
    (1u << (NFNLGRP_CONNTRACK_DESTROY - 1));

// MNL_SOCKET_BUFFER_SIZE is a function-like macro over sysconf(). Remove when Swift imports those.
static inline size_t rg_ct_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }

// Starts a dump request (IPCTNL_MSG_CT_GET, NLM_F_DUMP) for one address family in `buf`.
static inline struct nlmsghdr *rg_ct_put_dump(void *buf, uint8_t family, uint32_t seq) {
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = rg_ct_msg_get;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    struct nfgenmsg *nfh = mnl_nlmsg_put_extra_header(nlh, sizeof(struct nfgenmsg));
    nfh->nfgen_family = family;
    nfh->version = NFNETLINK_V0;
    nfh->res_id = 0;
    return nlh;
}

// Glibc's Swift module leaves <sys/eventfd.h> out. A non-blocking, close-on-exec eventfd.
static inline int rg_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

_Static_assert(sizeof(struct nfgenmsg) == 4, "nfgenmsg is 4 bytes on the wire");

#endif
