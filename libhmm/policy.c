/* SPDX-License-Identifier: MIT */
/*
 * policy.c - where a faulting page goes: the decision a driver's fault
 * handler makes between mapping a page of system memory where it is and
 * migrating it into device memory first.
 *
 * The program advises ranges (hmm_mirror_advise, as cudaMemAdvise sets a
 * preferred location per allocation):
 *
 *   HMM_POLICY_MAP      map system pages where they are (the default
 *                       everywhere): the device uses host RAM across the bus.
 *   HMM_POLICY_MIGRATE  inside the range, a fault first moves the anonymous
 *                       pages of its window, at least to the end of the
 *                       faulting page's 2 MiB block, to the device
 *                       (hmm_migrate_to_device), then maps them; what cannot
 *                       move (file and shared memory, a full device) is
 *                       mapped where it is.
 *
 * Migration never reaches past an advised range: pages around it belong
 * to other allocations, which the program did not ask to move.
 *
 * The fault buffer (fault.c) asks before each fault it serves.  The advice
 * list is short and read under its own lock (a leaf).
 */
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The block a migrating fault moves at least (to its end). */
#define MIGRATE_BLOCK (2ULL << 20)

/* Room for need ranges.  Context: lock held.  Return: 0, -ENOMEM. */
static int advice_reserve(struct hmm__advice *a, size_t need)
{
	size_t cap = need < 8 ? 8 : need * 2;
	void *r;

	if (need <= a->cap)
		return 0;
	r = hmm__realloc(a->r, cap * sizeof(*a->r));
	if (!r)
		return -ENOMEM;
	a->r = r;
	a->cap = cap;
	return 0;
}

/* Drop [start, end) from the advice, splitting ranges, with room for one
 * more range after.  Context: lock held.  Return: 0, -ENOMEM (nothing
 * changed). */
static int advice_cut(struct hmm__advice *a, uint64_t start, uint64_t end)
{
	size_t extra = 0;

	for (size_t i = 0; i < a->n; i++)
		if (a->r[i].start < start && a->r[i].end > end)
			extra++;
	if (advice_reserve(a, a->n + extra + 1))
		return -ENOMEM;
	for (size_t i = 0; i < a->n;) {
		struct hmm__advised *r = &a->r[i];

		if (r->end <= start || r->start >= end) {
			i++;
		} else if (r->start < start && r->end > end) {
			a->r[a->n++] = (struct hmm__advised){ end, r->end, r->policy };
			r->end = start;
			i++;
		} else if (r->start < start) {
			r->end = start;
			i++;
		} else if (r->end > end) {
			r->start = end;
			i++;
		} else {
			*r = a->r[--a->n];
		}
	}
	return 0;
}

HMM_EXPORT int hmm_mirror_advise(struct hmm_mirror *m, const void *addr, size_t len,
				 unsigned int policy)
{
	uint64_t start = (uint64_t)(uintptr_t)addr, end = start + len;
	struct hmm__advice *a;
	int err;

	if (!m || !len || end < start || end > HMM__VA_LIMIT ||
	    (start | end) & (m->page_size - 1) ||
	    (policy != HMM_POLICY_MAP && policy != HMM_POLICY_MIGRATE))
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	a = &m->advice;
	pthread_mutex_lock(&a->lock);
	err = advice_cut(a, start, end);
	if (!err && policy != HMM_POLICY_MAP)
		a->r[a->n++] = (struct hmm__advised){ start, end, policy };
	if (!err)
		__atomic_store_n(&a->any, a->n != 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&a->lock);
	return err;
}

void hmm__advice_init(struct hmm__advice *a)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
}

void hmm__advice_destroy(struct hmm__advice *a)
{
	hmm__free(a->r);
	pthread_mutex_destroy(&a->lock);
}

uint64_t hmm__policy_prepare(struct hmm_mirror *m, uint64_t page, uint64_t end)
{
	struct hmm__advice *a = &m->advice;
	uint64_t rend = 0;
	bool migrate = false;

	if (!__atomic_load_n(&a->any, __ATOMIC_RELAXED))
		return end;
	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n; i++) {
		if (page >= a->r[i].start && page < a->r[i].end) {
			migrate = a->r[i].policy == HMM_POLICY_MIGRATE;
			rend = a->r[i].end;
			break;
		}
	}
	pthread_mutex_unlock(&a->lock);
	if (!migrate)
		return end;
	/* At least to the end of the fault's 2 MiB block, as a GPU driver
	 * moves a whole block of its virtual address space: one migration per
	 * block, not per write fault's 64 KiB; never past the advised range,
	 * and what is mapped ahead is only what moved. */
	if (end < ((page | (MIGRATE_BLOCK - 1)) + 1))
		end = (page | (MIGRATE_BLOCK - 1)) + 1;
	if (end > rend)
		end = rend;
	/* Whatever could not move is simply mapped where it is. */
	(void)hmm_migrate_to_device(m->dev, (void *)(uintptr_t)page, (size_t)(end - page), NULL);
	return end;
}
