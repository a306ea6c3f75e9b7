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

#endif
