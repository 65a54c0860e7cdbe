//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgstat_iter: a cgroup iterator (kernel >= 6.1) that writes, for the walk's
 * root and each of its descendants, the two counters the sampler reads on
 * every tick: CPU usage (what cgroup v2 cpu.stat calls usage_usec, in ns)
 * and memory usage (memory.current, or v1 memory.usage_in_bytes, in pages).
 * One read() of the iterator replaces two pread()s per cgroup: on a VM the
 * kernel's generic file path (fdget, kernfs, seq_file, vsnprintf) cost more
 * than the counters themselves.
 *
 * The figures are the files' own: a file read flushes the cgroup's per-CPU
 * statistics (rstat) and then reads cgroup->bstat; here the walk's root is
 * flushed once, which flushes its whole subtree, before the first record.
 * The flush is a kfunc: css_rstat_flush (6.16+) or cgroup_rstat_flush
 * (before); both are weak, and the record says when neither exists.
 *
 * Kernel types are declared here with only the fields read, and CO-RE
 * relocations find them in the running kernel's BTF. */
#include "include/hopscope.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_subsys_state {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct task_cputime {
	__u64 sum_exec_runtime;
} __attribute__((preserve_access_index));

struct cgroup_base_stat {
	struct task_cputime cputime;
} __attribute__((preserve_access_index));

struct cgroup {
	struct cgroup_subsys_state self;
	struct kernfs_node *kn;
	struct cgroup_subsys_state *subsys[14];
	struct cgroup_base_stat bstat;
} __attribute__((preserve_access_index));

typedef struct {
	__s64 counter;
} atomic_long_t;

struct page_counter {
	atomic_long_t usage;
} __attribute__((preserve_access_index));

struct mem_cgroup {
	struct cgroup_subsys_state css;
	struct page_counter memory;
} __attribute__((preserve_access_index));

struct bpf_iter__cgroup {
	struct bpf_iter_meta *meta;
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

enum cgroup_subsys_id {
	memory_cgrp_id = 4,
};

extern void css_rstat_flush(struct cgroup_subsys_state *css) __ksym __weak;
extern void cgroup_rstat_flush(struct cgroup *cgrp) __ksym __weak;

#define CGSTAT_MEM 1      /* mem_pages holds the memory controller's usage */
#define CGSTAT_FLUSHED 2  /* the walk's rstat was flushed before this record */

struct cgstat {
	__u64 id;        /* the cgroup's ID: its directory's inode number */
	__u64 cpu_ns;    /* cgroup->bstat.cputime.sum_exec_runtime */
	__u64 mem_pages; /* the memory page_counter's usage */
	__u32 flags;
	__u32 pad;
};

/* A weak kfunc that the running kernel lacks resolves to address 0. */
#define ksym_exists(sym) (!!(&sym))

SEC("iter.s/cgroup")
int cgstat_iter(struct bpf_iter__cgroup *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct cgroup *cg = ctx->cgroup;
	static __u32 flushed;
	struct cgstat r = {};

	if (!cg)
		return 0;
	if (ctx->meta->seq_num == 0) {
		flushed = 0;
		if (ksym_exists(css_rstat_flush)) {
			css_rstat_flush(&cg->self);
			flushed = CGSTAT_FLUSHED;
		} else if (ksym_exists(cgroup_rstat_flush)) {
			cgroup_rstat_flush(cg);
			flushed = CGSTAT_FLUSHED;
		}
	}
	/* The iterator hands a trusted cgroup pointer: its fields are read
	 * directly (a probe read costs about as much as the rest together). */
	r.id = cg->kn->id;
	r.cpu_ns = cg->bstat.cputime.sum_exec_runtime;
	r.flags = flushed;
	struct cgroup_subsys_state *css = cg->subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)];
	if (css) {
		/* The verifier does not follow the cast to the containing
		 * mem_cgroup: one probe read. */
		struct mem_cgroup *m = (void *)css;
		r.mem_pages = BPF_CORE_READ(m, memory.usage.counter);
		r.flags |= CGSTAT_MEM;
	}
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
