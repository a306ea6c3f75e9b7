/* Software prefetch for Swift, which has no spelling of its own for it. A static inline function
 * in a header: the compiler emits it into the Swift module that calls it and inlines it there,
 * so a call is one prefetch instruction. Nothing is linked. */
#ifndef REFLECTGUARD_PREFETCH_H
#define REFLECTGUARD_PREFETCH_H

/* Asks the CPU to start loading the cache line holding p (for reading, keep in all levels). A
 * hint only: it never faults, whatever p is. */
static inline void rg_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif
