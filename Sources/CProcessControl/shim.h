/* Process privileges for the agent: capabilities and prctl. Swift cannot call variadic C
 * functions (prctl) nor syscall(2), and glibc has no capget/capset wrappers (libcap does, but a
 * library for five calls is more than they are worth), so each becomes a fixed-argument inline
 * function here. Nothing is linked. */
#ifndef REFLECTGUARD_PROCESS_CONTROL_H
#define REFLECTGUARD_PROCESS_CONTROL_H

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

/* Version 3 (Linux 2.6.26+): two 32-bit words per set, capabilities 0-63. */
typedef struct { struct __user_cap_data_struct words[2]; } rg_cap_sets;

static inline int rg_prctl(int option, unsigned long a2, unsigned long a3) {
    return prctl(option, a2, a3, 0UL, 0UL);
}

/* The calling thread's effective, permitted and inheritable sets. */
static inline int rg_capget(rg_cap_sets *sets) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capget, &header, sets->words);
}

/* Sets the calling thread's sets (other threads keep theirs: call it while single-threaded). */
static inline int rg_capset(const rg_cap_sets *sets) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capset, &header, sets->words);
}

/* Children (iptables-nft) must inherit no descriptor of the agent's: a metrics client accepted
 * on another thread gets FD_CLOEXEC one call after accept(2) (accept4 does not import into Swift
 * here), and a child spawned in between would hold that connection open until it exits. glibc
 * 2.34+ closes every descriptor from `from` up in the child, but declares the function only
 * under _GNU_SOURCE, which Swift's Glibc module is not built with: the declaration is repeated
 * here, as glibc has it. */
#include <spawn.h>
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);

static inline int rg_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

#endif
