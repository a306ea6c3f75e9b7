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

/* A child bound to the agent's life: the BGP speaker must go when the agent goes, however it goes
 * (kill -9 included), so that its session drops and the upstream withdraws the Flowspec routes.
 * PR_SET_PDEATHSIG does that, but only when set inside the child between fork and exec, which
 * posix_spawn cannot reach, and Swift code is not safe to run in the child of a threaded fork.
 * So the child's side is here, async-signal-safe calls only. The signal is sent when the thread
 * that forked exits (not the process): callers fork from a thread that lives as long as the
 * agent, or wait for the child on the same thread. stdin is /dev/null, stdout and stderr go to
 * `out_fd`, every other descriptor is closed, the signal mask and SIGPIPE are reset (the agent
 * blocks its lifecycle signals and ignores SIGPIPE; both would survive exec). Returns the pid,
 * or -1 with errno. The child exits 126 when its set-up fails, 127 when exec does. */
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>

static inline pid_t rg_spawn_bound(const char *path, char *const argv[], char *const envp[],
                                   int out_fd, int death_signal) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    if (death_signal > 0) {
        if (prctl(PR_SET_PDEATHSIG, (unsigned long)death_signal, 0UL, 0UL, 0UL) != 0) _exit(126);
        /* The parent may have gone before prctl: then no signal would ever come. */
        if (getppid() != parent) _exit(126);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, 0);
    struct sigaction dfl;
    dfl.sa_handler = SIG_DFL;
    dfl.sa_flags = 0;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGPIPE, &dfl, 0);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0) _exit(126);
    syscall(SYS_close_range, 3U, ~0U, 0U);
    execve(path, argv, envp);
    _exit(127);
}

#endif
