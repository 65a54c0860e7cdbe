//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The cost floor for the probe's benchmark: a TC program that reserves one
 * 64-byte ring-buffer record per packet, stamps it and submits it without a
 * wake-up. Not attached by hopscope; only measured next to hopscope_tc. */
#include "include/hopscope.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} min_events SEC(".maps");

SEC("tc")
int minimal_tc(struct __sk_buff *skb)
{
	__u64 *e = bpf_ringbuf_reserve(&min_events, 64, 0);
	if (!e)
		return TC_ACT_UNSPEC;
	e[0] = bpf_ktime_get_ns();
	e[1] = skb->len;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
