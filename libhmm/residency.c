/* SPDX-License-Identifier: MIT */
/*
 * Page residency: a page's memory lives in host RAM or on one device, and
 * moves between them through the DMA engines.
 *
 * Which engines copy: a device's engines move pages onto it and off it, as
 * a GPU's copy engines do; a move between two devices uses the source's.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct hmm__pool *hmm__mem_pool(const struct hmm__mem *m, int loc)
{
	HMM_ASSERT(loc == HMM__LOC_HOST || (unsigned)loc < m->ndevices);
	return loc == HMM__LOC_HOST ? m->host : &m->devices[loc]->pool;
}

int hmm__page_new(const struct hmm__mem *m, bool overwrite, struct hmm__page **out)
{
	struct hmm__page *pg = malloc(sizeof(*pg));
	bool zeroed;
	int err;

	if (!pg)
		return -ENOMEM;
	err = hmm__pool_alloc(m->host, &pg->data, &zeroed);
	if (err) {
		free(pg);
		return err;
	}
	if (!zeroed && !overwrite)
		memset(pg->data, 0, m->page_size);
	pg->loc = HMM__LOC_HOST;
	pg->dest = HMM__LOC_HOST;
	pg->state = HMM__PAGE_STABLE;
	*out = pg;
	return 0;
}

void hmm__page_free(const struct hmm__mem *m, struct hmm__page *pg)
{
	hmm__pool_free(hmm__mem_pool(m, pg->loc), pg->data);
	free(pg);
}

/* The engines that copy between from and to. */
static struct hmm__device *copier(const struct hmm__mem *m, int from, int to)
{
	return m->devices[from != HMM__LOC_HOST ? from : to];
}

/* Every move counts as one page out of its source and into its destination. */
static void count_move(const struct hmm__mem *m, int from, int to)
{
	if (from != HMM__LOC_HOST) {
		struct hmm__device_counters *c = &m->devices[from]->counters;
		__atomic_add_fetch(&c->pages_out, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c->bytes_out, m->page_size, __ATOMIC_RELAXED);
	}
	if (to != HMM__LOC_HOST) {
		struct hmm__device_counters *c = &m->devices[to]->counters;
		__atomic_add_fetch(&c->pages_in, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c->bytes_in, m->page_size, __ATOMIC_RELAXED);
	}
}

int hmm__pages_move(const struct hmm__mem *m, struct hmm__page **pages, size_t n, int dest)
{
	struct hmm__pool *to = hmm__mem_pool(m, dest);
	struct hmm__dma_copy *copies;
	void **fresh;
	size_t i, k = 0, nalloc = 0;
	int err = 0;

	if (n == 0)
		return 0;
	copies = calloc(n, sizeof(*copies));
	fresh = calloc(n, sizeof(*fresh));
	if (!copies || !fresh) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		bool zeroed;

		HMM_ASSERT(pages[i]->loc != dest);
		err = hmm__pool_alloc(to, &fresh[i], &zeroed);
		if (err)
			goto out_unalloc;
		nalloc++;
	}
	/* One batch per engine set: pages from the same source go together. */
	while (k < n) {
		struct hmm__fence fence;
		int from = pages[k]->loc;
		size_t j = 0;

		for (i = k; i < n && pages[i]->loc == from; i++, j++) {
			copies[j].dst = fresh[i];
			copies[j].src = pages[i]->data;
			copies[j].len = m->page_size;
		}
		hmm__fence_init(&fence);
		err = hmm__dma_submit(copier(m, from, dest)->dma, copies, j, &fence);
		hmm__fence_wait(&fence);
		hmm__fence_destroy(&fence);
		if (err)
			goto out_unalloc;
		k = i;
	}
	for (i = 0; i < n; i++) {
		count_move(m, pages[i]->loc, dest);
		hmm__pool_free(hmm__mem_pool(m, pages[i]->loc), pages[i]->data);
		pages[i]->data = fresh[i];
		pages[i]->loc = (int16_t)dest;
	}
	goto out;

out_unalloc:
	while (nalloc-- > 0)
		hmm__pool_free(to, fresh[nalloc]);
out:
	free(copies);
	free(fresh);
	return err;
}
