/* Minimal kernel types for hopscope's TC programs, written by hand so that
 * generation needs no vmlinux.h and gives the same object on any machine.
 * Everything here is UAPI (stable): __sk_buff is the program's context, which
 * the verifier rewrites to the kernel's sk_buff, so CO-RE relocations are not
 * needed. Layouts are copied from include/uapi/linux/{bpf,ip,ipv6,tcp}.h. */
#ifndef HOPSCOPE_H
#define HOPSCOPE_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

enum {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* bpf_ringbuf_submit / bpf_ringbuf_query flags */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* bpf_skb_load_bytes_relative start_header */
enum {
	BPF_HDR_START_MAC = 0,
	BPF_HDR_START_NET = 1,
};

#define TC_ACT_UNSPEC (-1)

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
/* IPv6 extension headers the classifier steps over */
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_DSTOPTS 60

/* The head of struct __sk_buff, up to the last field hopscope reads or any
 * field before it, so that every offset matches the kernel's. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
};

struct iphdr {
	__u8 ihl_version; /* ihl:4 (low bits), version:4 (high bits) */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res; /* res1:4 (low), doff:4 (high) */
	__u8 flags;    /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 */
	__be16 window;
	__u16 check;
	__be16 urg_ptr;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

#endif
