// libpcap: capture files (pcap and pcapng) and live interfaces.
#ifndef REFLECTGUARD_CPCAP_SHIM_H
#define REFLECTGUARD_CPCAP_SHIM_H
#include <sys/socket.h>
#include <netinet/in.h>
#include <pcap/pcap.h>
#endif
