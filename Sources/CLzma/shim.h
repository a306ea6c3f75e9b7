// liblzma: xz-compressed captures (`.pcap.xz`), decoded as a stream.
#ifndef REFLECTGUARD_CLZMA_SHIM_H
#define REFLECTGUARD_CLZMA_SHIM_H
#include <stdint.h>
#include <string.h>
#include <lzma.h>

// LZMA_STREAM_INIT is a macro initialiser Swift cannot import; a zeroed lzma_stream is what it
// spells (liblzma's documentation allows either).
// LZMA_CONCATENATED is a macro (UINT32_C(0x08)) Swift does not import.
static const uint32_t RG_LZMA_CONCATENATED = LZMA_CONCATENATED;

static inline void rg_lzma_stream_clear(lzma_stream *s) {
    memset(s, 0, sizeof *s);
}
#endif
