/* SPDX-License-Identifier: MIT */
/*
 * mirror.h - embedded devices and mirrors, shared by mirror.c (devices,
 * mirrors, device faults, invalidation) and launch.c (device kernels on
 * compute units).  libhmm private.
 *
 * Lock order: launch->lock (one launch at a time) before mirror->lock (the
 * driver lock, also taken by the invalidate callback); device->lock is a
 * leaf.  Nothing that invalidates runs under mirror->lock, and
 * hmm_range_fault() never does.
 *
 * The TLB shootdown.  Compute units translate through their own TLBs
 * without the lock.  Each announces the generation it translates under in
 * cu->in_access (0 when not accessing memory) before looking up its TLB,
 * then checks the mirror's generation again.  The invalidate callback, under
 * mirror->lock, changes the page table, bumps tlb_gen, then waits until no
 * compute unit is inside an access announced under an older generation.
 * All four accesses are sequentially consistent, so either the unit sees
 * the new generation (and its TLB flushes itself) or the callback sees the
 * unit's announcement (and waits for that access to end).
 */
#ifndef HMM_MIRROR_H
#define HMM_MIRROR_H

#include "hmm-internal.h"
#include "pagetable.h"

struct hmm_device {
	struct hmm__device *core;      /* the device model (attached: for anonymous memory) */
	struct hmm__attached *attached; /* attached to an hmmfs mount (attach.c) */
	unsigned attached_index;       /* the mount's device */
	uint32_t attached_type;        /* HMM_DEVICE_PRIVATE or _COHERENT */
	unsigned compute_units;
	pid_t pid;                     /* the process that made it (hmm__inherited) */
	pthread_mutex_t lock;
	struct hmm_mirror *mirror; /* protected by lock */
};

/*
 * A device a fork child inherited: its threads are the parent's, so the
 * child only forgets it and its mirror; every other call on them gives
 * -ENODEV (libhmm(3), "Threads").
 */
static inline bool hmm__inherited(const struct hmm_device *dev)
{
	return dev->pid != hmm__self_pid();
}

/* A compute unit: a thread with its TLB, running kernel instances.  Each
 * starts on its own cache lines: its TLB counters change at every access. */
struct __attribute__((aligned(64))) hmm__cu {
	struct hmm_mirror *mirror;
	unsigned index;
	pthread_t thread;
	struct hmm__tlb tlb;
	uint64_t in_access;   /* atomic: generation of the access in flight, or 0 */
	struct hmm_kernel *k; /* the instance it runs now */
	/* launch.c, the unit's own: where a write fault streaming on from the
	 * last one would land, and how many pages that one mapped */
	uint64_t write_next, write_ahead;
};

struct hmm__launch;

/* policy.c: the ranges a program advised a policy for. */
struct hmm__advised {
	uint64_t start, end;
	unsigned policy;
};

struct hmm__advice {
	pthread_mutex_t lock;         /* a leaf */
	struct hmm__advised *r;       /* disjoint ranges, in no order */
	size_t n, cap;
	bool any;                     /* atomic: n != 0 */
};

void hmm__advice_init(struct hmm__advice *a);
void hmm__advice_destroy(struct hmm__advice *a);

/* fault.c: the device fault buffer (see the top of fault.c). */
#define HMM__FAULT_BUFFER 64

/* A faulting access waiting for its answer. */
struct hmm__fault_waiter {
	int result;      /* the access's answer, once done */
	bool taken;      /* a servicer took the fault out of the buffer */
	bool done;       /* result is set */
};

struct hmm__fault {
	uint64_t page;   /* the faulting page */
	uint64_t end;    /* how far the access may go on: map up to here */
	bool write;
	struct hmm__fault_waiter *waiter;
};

struct hmm__fault_buffer {
	pthread_mutex_t lock;      /* a leaf */
	pthread_cond_t serviced;   /* a batch was taken or serviced */
	struct hmm__fault entries[HMM__FAULT_BUFFER]; /* queued, not yet taken */
	unsigned n;
	unsigned servicing;        /* batches being serviced now */
	unsigned max_servicing;    /* at most this many at once: the CPUs */
	uint64_t queued, batches;  /* counters */
};

void hmm__fault_buffer_init(struct hmm__fault_buffer *fb);
void hmm__fault_buffer_destroy(struct hmm__fault_buffer *fb);

struct hmm_mirror {
	struct hmm_device *dev;
	struct hmm_interval_notifier *sub;
	const struct hmm__pt_ops *pt_ops;
	void *pt;                      /* protected by lock */
	pthread_mutex_t lock;          /* the driver lock */
	struct hmm_mirror_stats stats; /* protected by lock, except the TLB counters */
	uint64_t page_size;
	uint64_t tlb_gen;              /* atomic; bumped by every invalidation */
	/* Compute units, started by the first launch (launch.c). */
	struct hmm__launch *launch;
	struct hmm__cu *cus;           /* written before ncus is published */
	unsigned ncus;                 /* atomic */
	struct hmm__fault_buffer faults;
	struct hmm__advice advice;     /* policy.c */
};

/*
 * hmm__mirror_fault() - fault.c: a device fault at va for a write or a
 * read, through the fault buffer: map [va's page, end) (end: where the
 * access would go on; at least one page), or at least va's page when
 * something further on cannot be mapped.  Returns when the batch holding
 * it has been serviced; the caller replays its access.
 * Context: mirror->lock not held; may sleep.
 * Return: 0, -EFAULT, -EPERM, -ENOMEM.
 */
int hmm__mirror_fault(struct hmm_mirror *m, uint64_t va, uint64_t end, bool write);
/*
 * hmm__mirror_fault_round() - mirror.c: make [start, end) present in the
 * device page table (write access if write): range fault under the
 * sequence protocol, then the entries, in windows.
 * Return: 0, or the error of the first window that failed.
 */
int hmm__mirror_fault_round(struct hmm_mirror *m, uint64_t start, uint64_t end, bool write);

/*
 * policy.c: act on the policy for a fault at page whose window ends at end,
 * before the fault round.  Return: the end of the window to map (at most
 * end, at least one page past page).
 * Context: no lock held (it may migrate).
 */
uint64_t hmm__policy_prepare(struct hmm_mirror *m, uint64_t page, uint64_t end);

/* mirror.c: compute units when the caller names none: one per CPU. */
unsigned hmm__default_compute_units(void);

/* launch.c: stop and free the compute units.  Context: no launch running. */
void hmm__launch_stop(struct hmm_mirror *m);
/* hmm__launch_stop in a fork child: the units' threads are the parent's. */
void hmm__launch_forget(struct hmm_mirror *m);
/*
 * launch.c: if the calling thread is a compute unit, withdraw its
 * announcement (it makes one again at its next access).  Called before
 * anything that may wait for an invalidation, so that a kernel that unmaps
 * memory, or two that do at once, do not wait for themselves.
 */
void hmm__launch_quiesce_self(void);

#endif /* HMM_MIRROR_H */
