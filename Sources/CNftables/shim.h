// libnftables: apply a whole ruleset in-process as one netlink transaction.
#ifndef REFLECTGUARD_CNFTABLES_SHIM_H
#define REFLECTGUARD_CNFTABLES_SHIM_H
#include <stdio.h>
#include <stdbool.h>
#include <nftables/libnftables.h>
#endif
