//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* hopscope's observation point: a TC classifier that timestamps every TCP
 * segment of a watched flow and hands a small record to userspace.
 *
 * Needs Linux >= 5.8 (BPF ring buffer, bpf_ringbuf_query). Attached with TCX
 * (>= 6.6) or as a direct-action cls_bpf filter under clsact (older). It never
 * changes a packet's fate: every path returns TC_ACT_UNSPEC, so the next
 * program or the default action decides.
 *
 * Cost is kept low (DESIGN.md, "Cost"): flows are filtered here by port, only
 * segments with payload or SYN/FIN/RST are emitted, and events are submitted
 * without waking the reader unless the ring is filling up; the reader drains
 * on a timer. */
#include "include/hopscope.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define EVENT_HDR 64
#define MAX_CAPTURE 256

/* One record per emitted segment. Addresses are in network byte order
 * (IPv4 in the first 4 bytes), ports and sequence numbers in host order.
 * The record is EVENT_HDR + capture size bytes long; cap_len bytes of data
 * are valid. */
struct event {
	__u64 ts_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 point;       /* observation point, set per attachment */
	__u32 seq;
	__u32 ack;
	__u32 payload_len; /* TCP payload bytes in this skb (GSO: all segments) */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 flags;        /* TCP flags byte */
	__u8 family;       /* 4 or 6 */
	__u16 cap_len;
	__u8 data[MAX_CAPTURE];
};

/* Per-CPU counters; userspace sums over CPUs. matched == emitted + lost. */
struct counters {
	__u64 seen;    /* packets that ran the program */
	__u64 matched; /* TCP segments of watched ports worth an event */
	__u64 emitted; /* events submitted to the ring */
	__u64 lost;    /* events lost because the ring was full */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by the loader */
} events SEC(".maps");

/* Watched ports: index = port (host order), value != 0 = watched. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

/* Set by the loader before load. */
volatile const __u32 point_id = 0;
volatile const __u32 capture_len = 128;
/* Wake the reader when this much is waiting in the ring, otherwise submit
 * silently and let the reader's timer drain it. */
volatile const __u64 wakeup_bytes = 1 << 20;


static __always_inline int watched(__u16 port)
{
	__u32 key = port;
	__u8 *v = bpf_map_lookup_elem(&ports, &key);
	return v && *v;
}

/* emit reserves a record with room for size bytes of payload. size is a
 * compile-time constant at each call site, as bpf_ringbuf_reserve needs. */
static __always_inline void emit(struct __sk_buff *skb, struct counters *c,
				 struct event *h, __u32 payload_off, const __u32 size)
{
	struct event *e = bpf_ringbuf_reserve(&events, EVENT_HDR + size, 0);
	if (!e) {
		c->lost++;
		return;
	}
	__builtin_memcpy(e, h, EVENT_HDR);
	__u32 n = h->payload_len;
	if (n > capture_len)
		n = capture_len;
	if (n > size)
		n = size;
	e->cap_len = 0;
	if (n > 0) {
		/* n is in [1, size] already; say so in a form every verifier
		 * tracks: (n - 1) & (size - 1) is in [0, size - 1] (size is a power
		 * of two), plus one is [1, size]. 6.1's verifier learns no lower
		 * bound from n != 0, and the helper's length must be >= 1. */
		__u32 m = n - 1;
		asm volatile("%0 &= %1" : "+r"(m) : "i"(size - 1));
		m += 1;
		/* bpf_skb_load_bytes, unlike its _relative sibling, also reads
		 * paged (non-linear) data, where a GSO skb keeps its payload */
		if (bpf_skb_load_bytes(skb, payload_off, e->data, m) == 0)
			e->cap_len = m;
	}
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
	c->emitted++;
}

/* load copies len bytes at off (from skb->data) to to: straight from the
 * linear head when they are there (headers almost always are), through
 * bpf_skb_load_bytes otherwise. A helper call per header is a good part of
 * the program's cost, so the direct path matters. */
static __always_inline int load(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (off <= 128 && data + off + len <= data_end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

/* ipv6_ext steps over one IPv6 extension header at l2 + *off when *next
 * is one the classifier follows, and does nothing when *next is TCP. It
 * returns nonzero to give the packet up: another protocol, a fragment that
 * is not the first, or a header it cannot read. */
static __always_inline int ipv6_ext(struct __sk_buff *skb, __u32 l2, __u8 *next, __u32 *off)
{
	__u8 eh[4];
	switch (*next) {
	case IPPROTO_TCP:
		return 0;
	case IPPROTO_FRAGMENT: /* 8 bytes; offset in the top 13 bits of 2-3 */
		if (load(skb, l2 + *off, eh, 4))
			return 1;
		if (((eh[2] << 8) | eh[3]) & 0xfff8)
			return 1;
		*next = eh[0];
		*off += 8;
		return 0;
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS: /* (length + 1) 8-byte units */
		if (load(skb, l2 + *off, eh, 2))
			return 1;
		*next = eh[0];
		*off += ((__u32)eh[1] + 1) * 8;
		return 0;
	}
	return 1;
}

SEC("tc")
int hopscope_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct counters *c = bpf_map_lookup_elem(&stats, &zero);
	if (!c)
		return TC_ACT_UNSPEC;
	c->seen++;

	struct event h;
	__u32 l4off, ip_len;
	__u16 proto = bpf_ntohs((__u16)skb->protocol);
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return TC_ACT_UNSPEC;

	/* At TC, skb->data is the MAC header on Ethernet-like devices (veth,
	 * lo) and the network header on L3 devices: tell them apart by the
	 * EtherType where Ethernet's would be. */
	__u32 l2 = 0;
	__be16 ethertype;
	if (load(skb, 12, &ethertype, 2) == 0 && ethertype == (__be16)skb->protocol)
		l2 = 14;

	if (proto == ETH_P_IP) {
		struct iphdr ip;
		if (load(skb, l2, &ip, sizeof(ip)))
			return TC_ACT_UNSPEC;
		if (ip.protocol != IPPROTO_TCP || (ip.ihl_version >> 4) != 4)
			return TC_ACT_UNSPEC;
		if (bpf_ntohs(ip.frag_off) & 0x1fff) /* not the first fragment */
			return TC_ACT_UNSPEC;
		l4off = (ip.ihl_version & 0xf) * 4;
		ip_len = bpf_ntohs(ip.tot_len);
		if (ip_len == 0) /* BIG TCP: the length is the skb's */
			ip_len = skb->len - 14;
		h.family = 4;
		__builtin_memset(h.saddr, 0, sizeof(h.saddr));
		__builtin_memset(h.daddr, 0, sizeof(h.daddr));
		__builtin_memcpy(h.saddr, &ip.saddr, 4);
		__builtin_memcpy(h.daddr, &ip.daddr, 4);
	} else {
		struct ipv6hdr ip6;
		if (load(skb, l2, &ip6, sizeof(ip6)))
			return TC_ACT_UNSPEC;
		/* Step over up to 4 extension headers (hop-by-hop, routing,
		 * destination options, fragment) to TCP; anything else (ESP,
		 * AH, a deeper chain) is not followed. */
		__u8 next = ip6.nexthdr;
		__u32 off = sizeof(ip6);
		if (ipv6_ext(skb, l2, &next, &off) || ipv6_ext(skb, l2, &next, &off) ||
		    ipv6_ext(skb, l2, &next, &off) || ipv6_ext(skb, l2, &next, &off))
			return TC_ACT_UNSPEC;
		if (next != IPPROTO_TCP)
			return TC_ACT_UNSPEC;
		l4off = off;
		ip_len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		if (ip_len == sizeof(ip6))
			ip_len = skb->len - 14;
		h.family = 6;
		__builtin_memcpy(h.saddr, ip6.saddr, 16);
		__builtin_memcpy(h.daddr, ip6.daddr, 16);
	}

	struct tcphdr tcp;
	if (load(skb, l2 + l4off, &tcp, sizeof(tcp)))
		return TC_ACT_UNSPEC;
	h.sport = bpf_ntohs(tcp.source);
	h.dport = bpf_ntohs(tcp.dest);
	if (!watched(h.dport) && !watched(h.sport))
		return TC_ACT_UNSPEC;

	__u32 hdrs = l4off + (tcp.doff_res >> 4) * 4;
	__u32 payload = ip_len > hdrs ? ip_len - hdrs : 0;
	if (payload == 0 && !(tcp.flags & (TCP_SYN | TCP_FIN | TCP_RST)))
		return TC_ACT_UNSPEC; /* a pure ACK: the correlator does not need it */
	c->matched++;

	__u32 payload_off = l2 + hdrs;

	h.ts_ns = bpf_ktime_get_ns();
	h.point = point_id;
	h.seq = bpf_ntohl(tcp.seq);
	h.ack = bpf_ntohl(tcp.ack_seq);
	h.payload_len = payload;
	h.flags = tcp.flags;
	h.cap_len = 0;

	if (capture_len <= 64)
		emit(skb, c, &h, payload_off, 64);
	else if (capture_len <= 128)
		emit(skb, c, &h, payload_off, 128);
	else
		emit(skb, c, &h, payload_off, 256);
	return TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
