// libpcap: capture files (pcap and pcapng) and live interfaces.
#ifndef REFLECTGUARD_CPCAP_SHIM_H
#define REFLECTGUARD_CPCAP_SHIM_H
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <pcap/pcap.h>

// glibc's fopencookie and cookie_io_functions_t are declared only under _GNU_SOURCE, which a
// module header cannot turn on for <stdio.h> (the Glibc module is already built without it).
// libpcap reads `FILE *`s, and a stream over our decompressors or the bytes we peeked at is how
// it reads a compressed pcap, a FIFO or standard input: so the same struct and function, under a
// name of our own bound to glibc's symbol. The layout is glibc's (four function pointers: read,
// write, seek, close), checked below.
typedef struct {
    ssize_t (*read)(void *cookie, char *buffer, size_t size);
    ssize_t (*write)(void *cookie, const char *buffer, size_t size);
    int (*seek)(void *cookie, long long *offset, int whence);
    int (*close)(void *cookie);
} rg_cookie_io_functions_t;
_Static_assert(sizeof(rg_cookie_io_functions_t) == 4 * sizeof(void *), "glibc's cookie_io_functions_t layout");

extern FILE *rg_fopencookie(void *cookie, const char *mode, rg_cookie_io_functions_t io) __asm__("fopencookie");

// BPF filters (--filter) behind opaque pointers. libpcap's classic `struct bpf_insn` and the
// kernel's eBPF `struct bpf_insn` (<linux/bpf.h>, through libbpf's module) share a name: a Swift
// module that sees both (the executable links Captures and the XDP path) fails to build once a
// Swift type of ours mentions `bpf_program`. So Swift holds a `void *` and these do the rest.

// Compiles `expression` for link type `dlt` (libpcap's DLT); NULL with libpcap's message in
// `error` (PCAP_ERRBUF_SIZE bytes) when it does not compile.
static inline void *rg_filter_compile(int dlt, const char *expression, char *error) {
    pcap_t *dead = pcap_open_dead(dlt, 262144);
    if (dead == NULL) { snprintf(error, PCAP_ERRBUF_SIZE, "libpcap could not open a handle for link type %d", dlt); return NULL; }
    struct bpf_program *program = calloc(1, sizeof *program);
    if (program == NULL || pcap_compile(dead, program, expression, 1, PCAP_NETMASK_UNKNOWN) != 0) {
        snprintf(error, PCAP_ERRBUF_SIZE, "%s", program == NULL ? "out of memory" : pcap_geterr(dead));
        free(program);
        pcap_close(dead);
        return NULL;
    }
    pcap_close(dead);
    return program;
}

// Whether a frame of `captured` bytes (`wire` on the wire) matches a compiled filter.
static inline int rg_filter_matches(const void *program, const unsigned char *bytes, unsigned captured, unsigned wire) {
    struct pcap_pkthdr header = {0};
    header.caplen = captured;
    header.len = wire;
    return pcap_offline_filter((const struct bpf_program *)program, &header, bytes);
}

static inline void rg_filter_free(void *program) {
    pcap_freecode((struct bpf_program *)program);
    free(program);
}

// Compiles `expression` and sets it on a live handle; -1 with pcap_geterr(handle) set on failure.
static inline int rg_set_filter(pcap_t *handle, const char *expression) {
    struct bpf_program program;
    if (pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) != 0) return -1;
    int rc = pcap_setfilter(handle, &program);
    pcap_freecode(&program);
    return rc;
}
#endif
