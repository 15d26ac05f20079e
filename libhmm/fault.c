/* SPDX-License-Identifier: MIT */
/*
 * fault.c - a mirror's device fault buffer: faults are queued, coalesced
 * by page and access kind, serviced in batches, and the faulting accesses
 * replayed, as a GPU's fault buffer and its driver's bottom half do.
 *
 * An access that misses the page table (a compute unit's load or store, a
 * hmm_mirror_read/write) puts its fault in the buffer: the page, how far
 * the access may go on (a window to map ahead), and whether it writes.  No
 * thread is dedicated to servicing: a faulting thread whose fault is still
 * queued, when fewer batches are being serviced than the machine has CPUs,
 * takes every fault queued so far as one batch; the others wait for the
 * batch that holds theirs.  Batches are serviced in parallel, because the
 * cost of a first touch is the kernel's page allocation, which scales with
 * CPUs as the CPU's own faults do; faults that queue while every CPU is
 * servicing are coalesced into the next batch.  Servicing sorts the batch,
 * merges the windows of each kind that overlap or touch into ranges, and
 * runs one fault round per range (the policy first, policy.c; then range
 * fault under the sequence protocol and the page-table update, mirror.c).
 * When a merged range fails, its faults are serviced one page each, so
 * that each gets its own answer (-EFAULT, -EPERM) and the good ones are
 * still mapped.  Then every faulting access replays: it looks up the page
 * table again, and faults again if an invalidation took the entry
 * meanwhile.
 *
 * Reads and writes are never merged: a write round asks for write access,
 * which would fail a read of read-only memory, or break copy-on-write of
 * pages that are only read.
 *
 * Lock order: fb->lock is a leaf; servicing runs without it (a round takes
 * mirror->lock and may sleep in range fault).  Concurrent rounds are safe
 * as concurrent hmm_range_fault() callers are: each installs under
 * mirror->lock what its snapshot, still current, says.
 */
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int by_page(const void *a, const void *b)
{
	const struct hmm__fault *x = a, *y = b;

	if (x->write != y->write)
		return x->write ? 1 : -1;
	return x->page < y->page ? -1 : x->page > y->page;
}

/* One fault alone: its page, then (if the window failed) the page only. */
static int service_one(struct hmm_mirror *m, const struct hmm__fault *f)
{
	int err = hmm__mirror_fault_round(m, f->page, f->end, f->write);

	if ((err == -EFAULT || err == -EPERM) && f->end - f->page > m->page_size)
		err = hmm__mirror_fault_round(m, f->page, f->page + m->page_size, f->write);
	return err;
}

/* Service a batch: merged ranges first, each fault alone where one failed. */
static void service(struct hmm_mirror *m, struct hmm__fault *f, unsigned n)
{
	uint64_t done = 0;

	qsort(f, n, sizeof(*f), by_page);
	/* The policy first.  A migrating one maps ahead only what it moved:
	 * a fault inside a window it already acted on ends where that did. */
	if (__atomic_load_n(&m->advice.any, __ATOMIC_RELAXED)) {
		for (unsigned k = 0; k < n; k++) {
			if (f[k].page < done && f[k].end > done)
				f[k].end = done;
			else if (f[k].page >= done)
				f[k].end = done = hmm__policy_prepare(m, f[k].page, f[k].end);
		}
	}
	for (unsigned i = 0; i < n;) {
		uint64_t start = f[i].page, end = f[i].end;
		unsigned j = i + 1;
		int err;

		while (j < n && f[j].write == f[i].write && f[j].page <= end) {
			if (f[j].end > end)
				end = f[j].end;
			j++;
		}
		err = hmm__mirror_fault_round(m, start, end, f[i].write);
		for (unsigned k = i; k < j; k++)
			f[k].waiter->result = err ? service_one(m, &f[k]) : 0;
		i = j;
	}
}

/*
 * Move a batch out of the buffer into batch: every queued fault if all,
 * else mine and the faults of its kind whose windows overlap or touch it,
 * directly or through one another (the others' owners service them in
 * parallel).  Context: fb->lock held.  Return: the faults taken.
 */
static unsigned take(struct hmm__fault_buffer *fb, const struct hmm__fault_waiter *mine, bool all,
		     struct hmm__fault *batch)
{
	uint64_t lo = 0, hi = 0;
	bool write = false, grew = true;
	unsigned n = 0;

	for (unsigned i = 0; i < fb->n; i++) {
		if (fb->entries[i].waiter == mine) {
			lo = fb->entries[i].page;
			hi = fb->entries[i].end;
			write = fb->entries[i].write;
		}
	}
	while (grew) {
		grew = false;
		for (unsigned i = 0; i < fb->n;) {
			struct hmm__fault *f = &fb->entries[i];

			if (all || (f->write == write && f->page <= hi && f->end >= lo)) {
				if (f->page < lo)
					lo = f->page;
				if (f->end > hi)
					hi = f->end;
				f->waiter->taken = true;
				batch[n++] = *f;
				*f = fb->entries[--fb->n];
				grew = !all;
			} else {
				i++;
			}
		}
	}
	return n;
}

int hmm__mirror_fault(struct hmm_mirror *m, uint64_t va, uint64_t end, bool write)
{
	struct hmm__fault_buffer *fb = &m->faults;
	uint64_t mask = m->page_size - 1, page = va & ~mask;
	struct hmm__fault_waiter me = { 0, false, false };

	end = (end + mask) & ~mask;
	if (end < page + m->page_size)
		end = page + m->page_size;
	pthread_mutex_lock(&fb->lock);
	while (fb->n == HMM__FAULT_BUFFER)
		pthread_cond_wait(&fb->serviced, &fb->lock);
	fb->entries[fb->n++] = (struct hmm__fault){ page, end, write, &me };
	fb->queued++;
	while (!me.done) {
		struct hmm__fault batch[HMM__FAULT_BUFFER];
		unsigned n;

		if (me.taken || fb->servicing == fb->max_servicing) {
			pthread_cond_wait(&fb->serviced, &fb->lock);
			continue;
		}
		/* Lead: take our fault and what merges with it as one batch,
		 * or all that is queued when no other CPU is free; service it
		 * unlocked. */
		fb->servicing++;
		n = take(fb, &me, fb->servicing == fb->max_servicing, batch);
		fb->batches++;
		pthread_cond_broadcast(&fb->serviced); /* room in the buffer */
		pthread_mutex_unlock(&fb->lock);
		service(m, batch, n);
		pthread_mutex_lock(&fb->lock);
		for (unsigned i = 0; i < n; i++)
			batch[i].waiter->done = true;
		fb->servicing--;
		pthread_cond_broadcast(&fb->serviced);
	}
	pthread_mutex_unlock(&fb->lock);
	return me.result;
}

void hmm__fault_buffer_init(struct hmm__fault_buffer *fb)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	pthread_mutex_init(&fb->lock, NULL);
	pthread_cond_init(&fb->serviced, NULL);
	fb->n = 0;
	fb->servicing = 0;
	fb->max_servicing = cpus < 1 ? 1 : cpus > HMM__FAULT_BUFFER ? HMM__FAULT_BUFFER : (unsigned)cpus;
	fb->queued = fb->batches = 0;
}

void hmm__fault_buffer_destroy(struct hmm__fault_buffer *fb)
{
	pthread_mutex_destroy(&fb->lock);
	pthread_cond_destroy(&fb->serviced);
}
