/* SPDX-License-Identifier: MIT */
/*
 * fault.c - a mirror's device fault buffer: faults are queued, coalesced
 * by page and access kind, serviced in batches, and the faulting accesses
 * replayed, as a GPU's fault buffer and its driver's bottom half do.
 *
 * An access that misses the page table (a compute unit's load or store, a
 * hmm_mirror_read/write) puts its fault in the buffer: the page, how far
 * the access may go on (a window to map ahead), and whether it writes.  No
 * thread is dedicated to servicing: the first faulting thread that finds
 * nobody servicing takes every fault queued so far as one batch, and the
 * others wait for the batch that holds theirs.  Servicing sorts the batch,
 * merges the windows of each kind that overlap or touch into ranges, and
 * runs one fault round per range (the policy first, policy.c; then range
 * fault under the sequence protocol and the page-table update, mirror.c).  When a merged range fails, its
 * faults are serviced one page each, so that each gets its own answer
 * (-EFAULT, -EPERM) and the good ones are still mapped.  Then every
 * faulting access replays: it looks up the page table again, and faults
 * again if an invalidation took the entry meanwhile.
 *
 * Reads and writes are never merged: a write round asks for write access,
 * which would fail a read of read-only memory, or break copy-on-write of
 * pages that are only read.
 *
 * Lock order: fb->lock is a leaf; servicing runs without it (a round takes
 * mirror->lock and may sleep in range fault).
 */
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <stdlib.h>

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
			*f[k].result = err ? service_one(m, &f[k]) : 0;
		i = j;
	}
}

int hmm__mirror_fault(struct hmm_mirror *m, uint64_t va, uint64_t end, bool write)
{
	struct hmm__fault_buffer *fb = &m->faults;
	uint64_t mask = m->page_size - 1, page = va & ~mask, mine;
	int result = 0;

	end = (end + mask) & ~mask;
	if (end < page + m->page_size)
		end = page + m->page_size;
	pthread_mutex_lock(&fb->lock);
	while (fb->n == HMM__FAULT_BUFFER)
		pthread_cond_wait(&fb->serviced, &fb->lock);
	fb->entries[fb->n++] = (struct hmm__fault){ page, end, write, &result };
	fb->queued++;
	mine = fb->filling;
	while (fb->done < mine) {
		struct hmm__fault batch[HMM__FAULT_BUFFER];
		unsigned n;

		if (fb->servicing) {
			pthread_cond_wait(&fb->serviced, &fb->lock);
			continue;
		}
		/* Lead: take what is queued as one batch, service it unlocked. */
		fb->servicing = true;
		n = fb->n;
		for (unsigned i = 0; i < n; i++)
			batch[i] = fb->entries[i];
		fb->n = 0;
		fb->filling++;
		fb->batches++;
		pthread_cond_broadcast(&fb->serviced); /* room in the buffer */
		pthread_mutex_unlock(&fb->lock);
		service(m, batch, n);
		pthread_mutex_lock(&fb->lock);
		fb->done = fb->filling - 1;
		fb->servicing = false;
		pthread_cond_broadcast(&fb->serviced);
	}
	pthread_mutex_unlock(&fb->lock);
	return result;
}

void hmm__fault_buffer_init(struct hmm__fault_buffer *fb)
{
	pthread_mutex_init(&fb->lock, NULL);
	pthread_cond_init(&fb->serviced, NULL);
	fb->n = 0;
	fb->filling = 1;
	fb->done = 0;
	fb->servicing = false;
	fb->queued = fb->batches = 0;
}

void hmm__fault_buffer_destroy(struct hmm__fault_buffer *fb)
{
	pthread_mutex_destroy(&fb->lock);
	pthread_cond_destroy(&fb->serviced);
}
