// The baseline `scripts/bench.sh inline` measures the agent against: the least a userspace
// NFQUEUE program can do. Every packet gets an accept, one receive and one verdict message (one
// sendto) per packet, the shape of libnetfilter_queue's examples/nf-queue.c (libmnl API).
//
// The queue is configured as the agent configures its own (copy range, queue length, socket
// buffer, FAIL_OPEN|GSO in ONE flags attribute), so both face the same kernel queue and differ
// only in how they receive and verdict.
//
// Usage: nfq-accept-all QUEUE [MAXLEN [RCVBUF_BYTES [COPY_RANGE]]]
// On SIGTERM/SIGINT it gives every packet already in the socket its verdict, unbinds, and prints
// "handled N" on stdout.
//
// Build: gcc -O2 -Wall -o nfq-accept-all nfq-accept-all.c -lnetfilter_queue -lmnl
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stopping;
static struct mnl_socket *nl;
static uint32_t queue_num;
static unsigned long long handled;
// One verdict message: nlmsghdr + nfgenmsg + NFQA_VERDICT_HDR, well under a page.
static char verdict_buf[256];

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void die(const char *what) {
	fprintf(stderr, "nfq-accept-all: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int on_packet(const struct nlmsghdr *nlh, void *data) {
	(void)data;
	struct nlattr *attr[NFQA_MAX + 1] = { 0 };
	if (nfq_nlmsg_parse(nlh, attr) < 0 || attr[NFQA_PACKET_HDR] == NULL) {
		fprintf(stderr, "nfq-accept-all: message without a packet header\n");
		return MNL_CB_ERROR;
	}
	const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	struct nlmsghdr *v = nfq_nlmsg_put(verdict_buf, NFQNL_MSG_VERDICT, queue_num);
	nfq_nlmsg_verdict_put(v, ntohl(ph->packet_id), NF_ACCEPT);
	if (mnl_socket_sendto(nl, v, v->nlmsg_len) < 0) die("sendto(verdict)");
	handled++;
	return MNL_CB_OK;
}

// Sends one config message with NLM_F_ACK and waits for its answer, so a refused step (the queue
// is taken, a flag unknown) is reported where it happened.
static void configure(char *buf, size_t size, struct nlmsghdr *nlh, uint32_t portid, const char *what) {
	static uint32_t seq;
	nlh->nlmsg_flags |= NLM_F_ACK;
	nlh->nlmsg_seq = ++seq;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) die(what);
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl, buf, size);
		if (n < 0) die(what);
		// Packets cannot arrive before the bind's ACK, and the bind already set the copy mode;
		// later steps may see some: they get their accept through on_packet.
		int r = mnl_cb_run(buf, n, seq, portid, on_packet, NULL);
		if (r == MNL_CB_STOP) return;
		if (r == MNL_CB_ERROR) die(what);
	}
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: %s QUEUE [MAXLEN [RCVBUF_BYTES [COPY_RANGE]]]\n", argv[0]);
		return 2;
	}
	queue_num = (uint32_t)strtoul(argv[1], NULL, 10);
	uint32_t maxlen = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 4096;
	int rcvbuf = argc > 3 ? atoi(argv[3]) : (int)maxlen * 2048;
	uint32_t copy_range = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 256;

	// No SA_RESTART: a signal must end a blocked receive.
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	// Big enough for one packet message (copy range + attributes) with room to spare; netlink
	// hands each queued packet over as its own datagram.
	size_t size = 0xffff + (MNL_SOCKET_BUFFER_SIZE / 2);
	char *buf = malloc(size);
	if (buf == NULL) die("malloc");

	nl = mnl_socket_open(NETLINK_NETFILTER);
	if (nl == NULL) die("mnl_socket_open");
	int fd = mnl_socket_get_fd(nl);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) die("SO_RCVBUFFORCE");
	// A receive timeout bounds the window between checking `stopping` and blocking.
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) die("SO_RCVTIMEO");
	// Losses are read from /proc's user_dropped, as the agent does, not from ENOBUFS.
	int one = 1;
	if (mnl_socket_setsockopt(nl, NETLINK_NO_ENOBUFS, &one, sizeof one) < 0) die("NETLINK_NO_ENOBUFS");
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) die("mnl_socket_bind");
	uint32_t portid = mnl_socket_get_portid(nl);

	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue_num);
	nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND);
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, (int)copy_range);
	configure(buf, size, nlh, portid, "bind (is the queue taken?)");

	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue_num);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, maxlen);
	configure(buf, size, nlh, portid, "queue maxlen");

	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue_num);
	uint32_t flags = htonl(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, flags);
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, flags);
	configure(buf, size, nlh, portid, "queue flags");

	while (!stopping) {
		ssize_t n = mnl_socket_recvfrom(nl, buf, size);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
			die("recv");
		}
		if (mnl_cb_run(buf, n, 0, portid, on_packet, NULL) < 0) die("mnl_cb_run");
	}

	// Drain: the kernel drops what is still queued to a socket that closes.
	for (;;) {
		ssize_t n = recv(fd, buf, size, MSG_DONTWAIT);
		if (n <= 0) break;
		if (mnl_cb_run(buf, n, 0, portid, on_packet, NULL) < 0) break;
	}
	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue_num);
	nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_UNBIND);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) perror("nfq-accept-all: unbind");
	mnl_socket_close(nl);
	free(buf);
	printf("handled %llu\n", handled);
	return 0;
}
