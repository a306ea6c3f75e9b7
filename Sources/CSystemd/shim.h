// libsystemd: readiness notification (sd_notify) and native journal entries (sd_journal_sendv).
// sd_journal_send is variadic and does not import into Swift; sd_journal_sendv takes the same
// fields as an iovec array. Both are no-ops or fail cleanly when not under systemd.
#ifndef REFLECTGUARD_CSYSTEMD_SHIM_H
#define REFLECTGUARD_CSYSTEMD_SHIM_H
#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#endif
