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
	struct hmm__page *pg = hmm__calloc(1, sizeof(*pg)); /* zero: no CPU copy, not in place */
	bool zeroed;
	int err;

	if (!pg)
		return -ENOMEM;
	err = hmm__pool_alloc(m->host, &pg->data, &zeroed);
	if (err) {
		hmm__free(pg);
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
	hmm__free(pg);
}

/* The engines that copy between from and to. */
static struct hmm__device *copier(const struct hmm__mem *m, int from, int to)
{
	return m->devices[from != HMM__LOC_HOST ? from : to];
}

/* n moves from one source to one destination, in the devices' counters. */
static void count_moves(const struct hmm__mem *m, int from, int to, uint64_t n)
{
	if (from != HMM__LOC_HOST) {
		struct hmm__device_counters *c = &m->devices[from]->counters;
		__atomic_add_fetch(&c->pages_out, n, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c->bytes_out, n * m->page_size, __ATOMIC_RELAXED);
	}
	if (to != HMM__LOC_HOST) {
		struct hmm__device_counters *c = &m->devices[to]->counters;
		__atomic_add_fetch(&c->pages_in, n, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c->bytes_in, n * m->page_size, __ATOMIC_RELAXED);
	}
}

/*
 * One submission of a move: the pages order[first, first + n) of the
 * caller's array, all from the same source, copied into fresh[] against
 * fence.
 */
struct move_part {
	size_t first, n;
	int from;
	bool submitted;
	struct hmm__fence fence;
};

/*
 * Make the part's pages resident at dest: the copies are done.  Pages at
 * the same place are handled under one acquisition of each lock.
 */
static void commit_part(const struct hmm__mem *m, struct hmm__page **pages, const size_t *order,
			void **fresh, void **old, const struct move_part *part, int dest)
{
	struct hmm__device *from = part->from != HMM__LOC_HOST ? m->devices[part->from] : NULL;
	struct hmm__device *to = dest != HMM__LOC_HOST ? m->devices[dest] : NULL;
	size_t end = part->first + part->n;

	if (from) {
		pthread_mutex_lock(&from->lru_lock);
		for (size_t i = part->first; i < end; i++)
			lru_unlink(from, pages[order[i]]);
		pthread_mutex_unlock(&from->lru_lock);
	}
	for (size_t i = part->first; i < end; i++) {
		struct hmm__page *pg = pages[order[i]];

		old[i] = pg->data;
		pg->data = fresh[i];
		pg->loc = (int16_t)dest;
	}
	hmm__pool_free_bulk(hmm__mem_pool(m, part->from), old + part->first, part->n);
	if (to) {
		pthread_mutex_lock(&to->lru_lock);
		for (size_t i = part->first; i < end; i++)
			lru_append(to, pages[order[i]]);
		pthread_mutex_unlock(&to->lru_lock);
	}
	count_moves(m, part->from, dest, part->n);
}

/*
 * Memory at dest for n pages (pages[order[i]]): the owner's own where it
 * keeps one there (a run of pages of the same owner at a time), else the
 * location's pool.  All or nothing.
 */
static int alloc_at(const struct hmm__mem *m, int dest, struct hmm__page **pages,
		    const size_t *order, size_t n, void **fresh)
{
	struct hmm__pool *to = hmm__mem_pool(m, dest);
	size_t i = 0;
	int err = 0;

	if (dest == HMM__LOC_HOST || !m->owned)
		return hmm__pool_alloc_bulk(to, n, fresh);
	while (i < n && !err) {
		void *owner = pages[order[i]]->owner;
		struct hmm__pool_owner **slot = m->owned(owner, dest);
		size_t j = i + 1;

		while (j < n && pages[order[j]]->owner == owner)
			j++;
		if (slot)
			err = hmm__pool_alloc_owned(to, slot, j - i, fresh + i);
		/* Without memory of its own (no slot, or no descriptor left for
		 * its memfd), the location's anonymous memory will do. */
		if (!slot || (err && err != -ENOSPC))
			err = hmm__pool_alloc_bulk(to, j - i, fresh + i);
		if (!err)
			i = j;
	}
	if (err)
		hmm__pool_free_bulk(to, fresh, i);
	return err;
}

/*
 * One part per source (the source decides which engines copy).  Every part
 * is allocated and submitted before any is committed, so an error leaves
 * every page where it was; committing a part overlaps the copies of the
 * parts after it.  (Cutting one source's pages into several submissions, to
 * overlap allocation and commit with the copies, was measured: on two CPUs
 * it is no faster, and the extra engine wake-ups cost more than it saves.)
 */
int hmm__pages_move(const struct hmm__mem *m, struct hmm__page **pages, size_t n, int dest)
{
	struct hmm__pool *to = hmm__mem_pool(m, dest);
	size_t *order = NULL, *start = NULL, nlocs = m->ndevices + 1, nparts = 0, i;
	struct hmm__dma_copy *copies = NULL;
	struct move_part *parts = NULL;
	void **fresh = NULL, **old = NULL;
	int err = 0;

	if (n == 0)
		return 0;
	order = hmm__malloc(n * sizeof(*order));
	start = hmm__calloc(nlocs + 1, sizeof(*start));
	copies = hmm__malloc(n * sizeof(*copies));
	fresh = hmm__malloc(n * sizeof(*fresh));
	old = hmm__malloc(n * sizeof(*old));
	parts = hmm__calloc(nlocs, sizeof(*parts));
	if (!order || !start || !copies || !fresh || !old || !parts) {
		err = -ENOMEM;
		goto out;
	}
	/* Order the pages by source, stably (a counting sort by location + 1). */
	for (i = 0; i < n; i++) {
		HMM_ASSERT(pages[i]->loc != dest);
		start[pages[i]->loc + 2]++;
	}
	for (i = 1; i <= nlocs; i++)
		start[i] += start[i - 1];
	for (i = 0; i < n; i++)
		order[start[pages[i]->loc + 1]++] = i;
	/* start[l] is now the end of location l - 1's pages: walk them. */
	for (size_t l = 0, first = 0; l < nlocs; first = start[l], l++) {
		int from = (int)l - 1;

		if (first == start[l])
			continue; /* no pages there (and perhaps from == dest) */
		parts[nparts].first = first;
		parts[nparts].n = start[l] - first;
		parts[nparts].from = from;
		nparts++;
	}
	for (size_t p = 0; p < nparts && !err; p++) {
		struct move_part *part = &parts[p];
		struct hmm__dma *dma = copier(m, part->from, dest)->dma;

		err = alloc_at(m, dest, pages, order + part->first, part->n, fresh + part->first);
		if (err)
			break;
		for (i = part->first; i < part->first + part->n; i++) {
			copies[i].dst = fresh[i];
			copies[i].src = pages[order[i]]->data;
			copies[i].len = m->page_size;
		}
		hmm__fence_init(&part->fence);
		err = hmm__dma_submit(dma, copies + part->first, part->n, &part->fence);
		if (err) {
			hmm__fence_destroy(&part->fence);
			hmm__pool_free_bulk(to, fresh + part->first, part->n);
			break;
		}
		part->submitted = true;
	}
	/* The submitted parts are a prefix of parts[]: commit them in order, or
	 * on error give their new memory back once their copies are done. */
	for (size_t p = 0; p < nparts && parts[p].submitted; p++) {
		hmm__fence_wait(&parts[p].fence);
		hmm__fence_destroy(&parts[p].fence);
		if (err)
			hmm__pool_free_bulk(to, fresh + parts[p].first, parts[p].n);
		else
			commit_part(m, pages, order, fresh, old, &parts[p], dest);
	}
out:
	hmm__free(order);
	hmm__free(start);
	hmm__free(copies);
	hmm__free(fresh);
	hmm__free(old);
	hmm__free(parts);
	return err;
}
