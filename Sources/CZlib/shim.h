// zlib: gzip-compressed captures (`.pcap.gz`), inflated as a stream.
#ifndef REFLECTGUARD_CZLIB_SHIM_H
#define REFLECTGUARD_CZLIB_SHIM_H
#include <zlib.h>

// inflateInit2 is a macro (it passes ZLIB_VERSION and sizeof(z_stream) for the library's ABI
// check), which Swift cannot call. 15 + 32: the largest window, and a gzip or zlib header
// recognised automatically.
static inline int rg_inflate_init_gzip(z_stream *z) {
    return inflateInit2(z, 15 + 32);
}
#endif
