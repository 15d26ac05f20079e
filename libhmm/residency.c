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

static void lru_unlink(struct hmm__device *dev, struct hmm__page *pg)
{
	if (pg->lru_prev)
		pg->lru_prev->lru_next = pg->lru_next;
	else
		dev->lru_head = pg->lru_next;
	if (pg->lru_next)
		pg->lru_next->lru_prev = pg->lru_prev;
	else
		dev->lru_tail = pg->lru_prev;
	pg->lru_prev = pg->lru_next = NULL;
	dev->lru_count--;
}

static void lru_append(struct hmm__device *dev, struct hmm__page *pg)
{
	pg->lru_next = NULL;
	pg->lru_prev = dev->lru_tail;
	if (dev->lru_tail)
		dev->lru_tail->lru_next = pg;
	else
		dev->lru_head = pg;
	dev->lru_tail = pg;
	dev->lru_count++;
}

/* Context: takes the lru_lock of the device at loc, if it is one. */
static void lru_del(const struct hmm__mem *m, struct hmm__page *pg)
{
	struct hmm__device *dev;

	if (pg->loc == HMM__LOC_HOST)
		return;
	dev = m->devices[pg->loc];
	pthread_mutex_lock(&dev->lru_lock);
	lru_unlink(dev, pg);
	pthread_mutex_unlock(&dev->lru_lock);
}

static void lru_add(const struct hmm__mem *m, struct hmm__page *pg)
{
	struct hmm__device *dev;

	if (pg->loc == HMM__LOC_HOST)
		return;
	dev = m->devices[pg->loc];
	pthread_mutex_lock(&dev->lru_lock);
	lru_append(dev, pg);
	pthread_mutex_unlock(&dev->lru_lock);
}

void hmm__page_touch(const struct hmm__mem *m, struct hmm__page *pg)
{
	struct hmm__device *dev;

	if (pg->loc == HMM__LOC_HOST)
		return;
	dev = m->devices[pg->loc];
	pthread_mutex_lock(&dev->lru_lock);
	if (dev->lru_tail != pg) {
		lru_unlink(dev, pg);
		lru_append(dev, pg);
	}
	pthread_mutex_unlock(&dev->lru_lock);
}

size_t hmm__device_lru_oldest(struct hmm__device *dev, void (*hold)(void *owner),
			      void **owner, uint64_t *indices, size_t max)
{
	struct hmm__page *pg, *next, *stop;
	size_t n = 0;

	pthread_mutex_lock(&dev->lru_lock);
	pg = dev->lru_head;
	stop = dev->lru_tail;
	if (pg) {
		*owner = pg->owner;
		hold(pg->owner);
	}
	/* Walk the list once; what is picked goes to the tail behind stop. */
	while (pg && n < max) {
		bool last = pg == stop;

		next = pg->lru_next;
		if (pg->owner == *owner) {
			indices[n++] = pg->index;
			if (dev->lru_tail != pg) {
				lru_unlink(dev, pg);
				lru_append(dev, pg);
			}
		}
		if (last)
			break;
		pg = next;
	}
	pthread_mutex_unlock(&dev->lru_lock);
	return n;
}

int hmm__page_new(const struct hmm__mem *m, bool overwrite, void *owner, uint64_t index,
		  struct hmm__page **out)
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
	pg->owner = owner;
	pg->index = index;
	pg->lru_prev = pg->lru_next = NULL;
	*out = pg;
	return 0;
}

void hmm__page_free(const struct hmm__mem *m, struct hmm__page *pg)
{
	lru_del(m, pg);
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
	bool *sent; /* by location + 1: that source's batch is done */
	size_t i, k, nalloc = 0;
	int err = 0;

	if (n == 0)
		return 0;
	copies = calloc(n, sizeof(*copies));
	fresh = calloc(n, sizeof(*fresh));
	sent = calloc(m->ndevices + 1, sizeof(*sent));
	if (!copies || !fresh || !sent) {
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
	/* One DMA batch per source, wherever its pages stand in the array:
	 * the source decides which engines copy. */
	for (k = 0; k < n; k++) {
		struct hmm__fence fence;
		int from = pages[k]->loc;
		size_t j = 0;

		if (sent[from + 1])
			continue;
		sent[from + 1] = true;
		for (i = k; i < n; i++) {
			if (pages[i]->loc != from)
				continue;
			copies[j].dst = fresh[i];
			copies[j].src = pages[i]->data;
			copies[j].len = m->page_size;
			j++;
		}
		hmm__fence_init(&fence);
		err = hmm__dma_submit(copier(m, from, dest)->dma, copies, j, &fence);
		hmm__fence_wait(&fence);
		hmm__fence_destroy(&fence);
		if (err)
			goto out_unalloc;
	}
	for (i = 0; i < n; i++) {
		count_move(m, pages[i]->loc, dest);
		lru_del(m, pages[i]);
		hmm__pool_free(hmm__mem_pool(m, pages[i]->loc), pages[i]->data);
		pages[i]->data = fresh[i];
		pages[i]->loc = (int16_t)dest;
		lru_add(m, pages[i]);
	}
	goto out;

out_unalloc:
	while (nalloc-- > 0)
		hmm__pool_free(to, fresh[nalloc]);
out:
	free(copies);
	free(fresh);
	free(sent);
	return err;
}
