// libpcap: capture files (pcap and pcapng) and live interfaces.
#ifndef REFLECTGUARD_CPCAP_SHIM_H
#define REFLECTGUARD_CPCAP_SHIM_H
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/types.h>
#include <stdio.h>
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
#endif
