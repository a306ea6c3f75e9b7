// libzstd: zstd-compressed captures (`.pcapng.zst`), decompressed as a stream.
#ifndef REFLECTGUARD_CZSTD_SHIM_H
#define REFLECTGUARD_CZSTD_SHIM_H
#include <zstd.h>
#endif
