// libbpf: loads the XDP path's programs (the object embedded in rg_bpf_object.h), attaches them
// and reads and writes their maps. libbpf's options structs are filled by the LIBBPF_OPTS macro,
// which Swift cannot import, and its log callback takes a va_list: each wrapper below exists for
// one of those reasons and goes when Swift can call the API directly.
#ifndef REFLECTGUARD_CBPF_SHIM_H
#define REFLECTGUARD_CBPF_SHIM_H
// glibc's headers before any <linux/*.h> (struct redefinitions otherwise).
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/statfs.h>
#include <sys/mount.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <linux/if_link.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "rg_bpf_maps.h"
#include "rg_bpf_object.h"

// XDP_FLAGS_* are shifts Swift may not import as constants.
static const __u32 rg_xdp_flags_native = XDP_FLAGS_DRV_MODE;
static const __u32 rg_xdp_flags_generic = XDP_FLAGS_SKB_MODE;
static const __u32 rg_xdp_flags_replace = XDP_FLAGS_REPLACE;
static const __u32 rg_xdp_flags_if_noexist = XDP_FLAGS_UPDATE_IF_NOEXIST;

// libbpf's messages (the verifier's log included) go to a buffer the caller reads after a
// failure, not to stderr, so the agent's log stays one JSON line per event.
// (A function-local static: Swift's importer emits no storage for a header's file-scope static.)
#define RG_LIBBPF_LOG_SIZE 8192
static inline char *rg_libbpf_buffer(void) {
	static char messages[RG_LIBBPF_LOG_SIZE];
	return messages;
}
static int rg_libbpf_print(enum libbpf_print_level level, const char *format, va_list args) {
	if (level == LIBBPF_DEBUG) return 0;
	char *m = rg_libbpf_buffer();
	size_t used = strlen(m);
	if (used + 1 >= RG_LIBBPF_LOG_SIZE) return 0;
	return vsnprintf(m + used, RG_LIBBPF_LOG_SIZE - used, format, args);
}
static inline void rg_libbpf_capture(void) {
	rg_libbpf_buffer()[0] = 0;
	libbpf_set_print(rg_libbpf_print);
}
static inline const char *rg_libbpf_log(void) { return rg_libbpf_buffer(); }

static inline struct bpf_object *rg_open_embedded(void) {
	size_t size = 0;
	const unsigned char *buf = rg_bpf_object(&size);
	LIBBPF_OPTS(bpf_object_open_opts, o, .object_name = "reflectguard");
	return bpf_object__open_mem(buf, size, &o);
}

// Attaches (or, with old_prog_fd >= 0 and XDP_FLAGS_REPLACE, atomically replaces) a program.
static inline int rg_xdp_attach(int ifindex, int prog_fd, __u32 flags, int old_prog_fd) {
	LIBBPF_OPTS(bpf_xdp_attach_opts, o, .old_prog_fd = old_prog_fd);
	return bpf_xdp_attach(ifindex, prog_fd, flags, old_prog_fd >= 0 ? &o : NULL);
}

// The program attached to an interface in either mode: its id and mode flag (0: none).
static inline int rg_xdp_query(int ifindex, __u32 *prog_id, __u32 *mode_flags) {
	__u32 id = 0;
	*prog_id = 0;
	*mode_flags = 0;
	int r = bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &id);
	if (r == 0 && id) { *prog_id = id; *mode_flags = XDP_FLAGS_DRV_MODE; return 0; }
	r = bpf_xdp_query_id(ifindex, XDP_FLAGS_SKB_MODE, &id);
	if (r == 0 && id) { *prog_id = id; *mode_flags = XDP_FLAGS_SKB_MODE; return 0; }
	return r;
}

// A loaded program's name by id (needs CAP_SYS_ADMIN: BPF_PROG_GET_FD_BY_ID); an fd to it in
// *fd when fd is not NULL (the caller closes it), for an atomic replace.
static inline int rg_prog_name(__u32 id, char *name, size_t size, int *fd) {
	int f = bpf_prog_get_fd_by_id(id);
	if (f < 0) return -errno;
	struct bpf_prog_info info;
	memset(&info, 0, sizeof info);
	__u32 len = sizeof info;
	int r = bpf_obj_get_info_by_fd(f, &info, &len);
	if (r == 0) snprintf(name, size, "%s", info.name);
	if (fd && r == 0) *fd = f; else close(f);
	return r;
}

// The SYN recorder on tc clsact egress (a host's own SYNs never pass an XDP ingress hook).
// One handle and priority of ours, so a restart replaces its filter and never stacks a second.
#define RG_TC_HANDLE 0x5247
#define RG_TC_PRIORITY 0x5247
static inline int rg_tc_attach_egress(int ifindex, int prog_fd) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_EGRESS);
	int r = bpf_tc_hook_create(&hook);
	if (r && r != -EEXIST) return r;
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = RG_TC_HANDLE, .priority = RG_TC_PRIORITY, .prog_fd = prog_fd,
		    .flags = BPF_TC_F_REPLACE);
	return bpf_tc_attach(&hook, &o);
}
// The program id of our egress filter on the interface (0: none).
static inline int rg_tc_query_egress(int ifindex, __u32 *prog_id) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_EGRESS);
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = RG_TC_HANDLE, .priority = RG_TC_PRIORITY);
	*prog_id = 0;
	int r = bpf_tc_query(&hook, &o);
	if (r == 0) *prog_id = o.prog_id;
	return r;
}
static inline int rg_tc_detach_egress(int ifindex) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_EGRESS);
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = RG_TC_HANDLE, .priority = RG_TC_PRIORITY);
	return bpf_tc_detach(&hook, &o);
}

// BPF_PROG_TEST_RUN: runs a program once on a frame, returns its verdict in *retval.
static inline int rg_test_run(int prog_fd, const void *frame, __u32 size, __u32 *retval) {
	unsigned char out[4096];
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame, .data_size_in = size, .data_out = out,
		    .data_size_out = sizeof out, .repeat = 1);
	int r = bpf_prog_test_run_opts(prog_fd, &o);
	*retval = o.retval;
	return r;
}
#endif
