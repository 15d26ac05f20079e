/* SPDX-License-Identifier: MIT */
/*
 * Memory pools: a fixed capacity of memory handed out one page at a time.
 *
 * Memory is mapped in chunks as pages are needed and each chunk keeps its own
 * free list, threaded through the free pages themselves.  Chunks stay mapped
 * until the pool is destroyed: mapping and faulting memory in again on every
 * migration cost more than the copies.  Up to POOL_SPARE_BYTES of empty
 * chunks keep their memory; beyond that an empty chunk's memory is given
 * back with MADV_FREE (the kernel takes it only when it needs it), so a
 * pool's footprint still follows what it holds.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <numa.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * A pool's own memory is no program's: changing it must not go through
 * libhmm.so's interposed munmap and madvise (invalidate.c), whose
 * invalidations would call back into drivers while the caller holds locks
 * (migrate.c frees device pages under its table lock).  Raw system calls.
 */
static int pool_munmap(void *addr, size_t len)
{
	return (int)syscall(SYS_munmap, addr, len);
}

static int pool_madvise(void *addr, size_t len, int advice)
{
	return (int)syscall(SYS_madvise, addr, len, advice);
}

#define POOL_MIN_CHUNK (2u << 20)
/* Empty chunks kept mapped for reuse, so freeing and refilling a file does
 * not pay for mapping and faulting memory in again. */
#define POOL_SPARE_BYTES (32u << 20)

#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct hmm__chunk {
	void *base;
	size_t nfree;               /* pages on the free list */
	size_t nfresh;              /* pages not handed out since the chunk was
				     * mapped or released, at its end */
	bool released;              /* MADV_FREE'd: fresh pages may hold old data */
	void *free;                 /* first free page; each holds the next */
	struct hmm__chunk *next;    /* in pool->partial, when it has free pages */
	struct hmm__chunk **pprev;  /* the pointer to us in pool->partial, or NULL */
};

static bool is_power_of_two(size_t x)
{
	return x && !(x & (x - 1));
}

int hmm__pool_init(struct hmm__pool *p, size_t page_size, uint64_t capacity,
		   int numa_node)
{
	size_t sys = (size_t)sysconf(_SC_PAGESIZE);

	if (!is_power_of_two(page_size) || page_size < sys)
		return -EINVAL;
	memset(p, 0, sizeof(*p));
	p->page_size = page_size;
	p->chunk_size = page_size > POOL_MIN_CHUNK ? page_size : POOL_MIN_CHUNK;
	p->chunk_shift = (unsigned)__builtin_ctzl(p->chunk_size);
	p->capacity_pages = capacity / page_size;
	p->numa_node = numa_node;
	hmm__radix_init(&p->chunks);
	pthread_mutex_init(&p->lock, NULL);
	return 0;
}

static void partial_add(struct hmm__pool *p, struct hmm__chunk *c)
{
	c->next = p->partial;
	if (c->next)
		c->next->pprev = &c->next;
	c->pprev = &p->partial;
	p->partial = c;
}

static void partial_remove(struct hmm__chunk *c)
{
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	c->next = NULL;
	c->pprev = NULL;
}

/* Map a chunk aligned to its size, so a page finds its chunk by address. */
static struct hmm__chunk *chunk_map(struct hmm__pool *p)
{
	size_t size = p->chunk_size;
	struct hmm__chunk *c = calloc(1, sizeof(*c));
	char *raw, *base;

	if (!c)
		return NULL;
	raw = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		free(c);
		return NULL;
	}
	base = (char *)(((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1));
	if (base > raw)
		pool_munmap(raw, (size_t)(base - raw));
	if (base + size < raw + 2 * size)
		pool_munmap(base + size, (size_t)(raw + 2 * size - (base + size)));
	if (p->numa_node >= 0 && numa_available() >= 0)
		numa_tonode_memory(base, size, p->numa_node);
	/* Fault the whole chunk in at once, as huge pages where the kernel
	 * allows, rather than a page at a time in whoever first writes to it
	 * (MADV_POPULATE_WRITE is a no-op before Linux 5.14). */
	pool_madvise(base, size, MADV_HUGEPAGE);
	pool_madvise(base, size, MADV_POPULATE_WRITE);
	c->base = base;
	c->nfresh = size / p->page_size;
	if (hmm__radix_insert(&p->chunks, (uintptr_t)base >> p->chunk_shift, c) < 0) {
		pool_munmap(base, size);
		free(c);
		return NULL;
	}
	p->nchunks++;
	return c;
}

/* Take one page.  Context: p->lock held; the caller checked the capacity. */
static int take_locked(struct hmm__pool *p, void **page, bool *zeroed)
{
	size_t per_chunk = p->chunk_size / p->page_size;
	struct hmm__chunk *c;
	void *pg;

	c = p->partial;
	if (!c) {
		c = chunk_map(p);
		if (!c)
			return -ENOMEM;
		partial_add(p, c);
		p->nempty++;
	}
	if (c->nfree + c->nfresh == per_chunk)
		p->nempty--;
	if (c->free) {
		pg = c->free;
		c->free = *(void **)pg;
		c->nfree--;
		*zeroed = false;
	} else {
		/* Never handed out since the chunk was mapped: zero, unless its
		 * memory was released and kept old data. */
		*zeroed = !c->released;
		pg = (char *)c->base + (per_chunk - c->nfresh) * p->page_size;
		c->nfresh--;
	}
	if (!c->free && !c->nfresh)
		partial_remove(c);
	p->used_pages++;
	*page = pg;
	return 0;
}

/* The chunk holding page; hint, if not NULL, is tried first. */
static struct hmm__chunk *chunk_of(struct hmm__pool *p, void *page, struct hmm__chunk *hint)
{
	struct hmm__chunk *c = hint;

	if (!c || (uintptr_t)page - (uintptr_t)c->base >= p->chunk_size)
		c = hmm__radix_lookup(&p->chunks, (uintptr_t)page >> p->chunk_shift);
	HMM_ASSERT(c);
	return c;
}

/* Give one page back to its chunk c.  Context: p->lock held. */
static void put_locked(struct hmm__pool *p, struct hmm__chunk *c, void *page)
{
	size_t per_chunk = p->chunk_size / p->page_size;

	if (!c->free && !c->nfresh)
		partial_add(p, c);
	*(void **)page = c->free;
	c->free = page;
	c->nfree++;
	p->used_pages--;
	if (c->nfree + c->nfresh == per_chunk) {
		if (p->nempty * p->chunk_size >= POOL_SPARE_BYTES) {
			/* Beyond the spare chunks: give the memory back, keep the
			 * mapping.  The free list lived in that memory: start over. */
			pool_madvise(c->base, p->chunk_size, MADV_FREE);
			c->released = true;
			c->free = NULL;
			c->nfree = 0;
			c->nfresh = per_chunk;
		}
		p->nempty++;
	}
}

int hmm__pool_alloc(struct hmm__pool *p, void **page, bool *zeroed)
{
	int err = -ENOSPC;

	pthread_mutex_lock(&p->lock);
	if (p->used_pages < p->capacity_pages)
		err = take_locked(p, page, zeroed);
	pthread_mutex_unlock(&p->lock);
	return err;
}

int hmm__pool_alloc_bulk(struct hmm__pool *p, size_t n, void **pages)
{
	struct hmm__chunk *c = NULL;
	size_t i;
	int err = 0;

	pthread_mutex_lock(&p->lock);
	if (p->capacity_pages - p->used_pages < n)
		err = -ENOSPC;
	for (i = 0; !err && i < n; i++) {
		bool zeroed;

		err = take_locked(p, &pages[i], &zeroed);
		if (err)
			break;
	}
	if (err) {
		/* pages[0, i) were taken. */
		while (i-- > 0) {
			c = chunk_of(p, pages[i], c);
			put_locked(p, c, pages[i]);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return err;
}

void hmm__pool_free(struct hmm__pool *p, void *page)
{
	pthread_mutex_lock(&p->lock);
	put_locked(p, chunk_of(p, page, NULL), page);
	pthread_mutex_unlock(&p->lock);
}

void hmm__pool_free_bulk(struct hmm__pool *p, void *const *pages, size_t n)
{
	struct hmm__chunk *c = NULL;

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < n; i++) {
		c = chunk_of(p, pages[i], c);
		put_locked(p, c, pages[i]);
	}
	pthread_mutex_unlock(&p->lock);
}

uint64_t hmm__pool_used(struct hmm__pool *p)
{
	uint64_t used;

	pthread_mutex_lock(&p->lock);
	used = p->used_pages;
	pthread_mutex_unlock(&p->lock);
	return used;
}

static void unmap_one(void *item, void *arg)
{
	struct hmm__pool *p = arg;
	struct hmm__chunk *c = item;

	pool_munmap(c->base, p->chunk_size);
	free(c);
}

void hmm__pool_destroy(struct hmm__pool *p)
{
	HMM_ASSERT(p->used_pages == 0);
	hmm__radix_truncate(&p->chunks, 0, unmap_one, p);
	p->partial = NULL;
	p->nchunks = 0;
	p->nempty = 0;
	pthread_mutex_destroy(&p->lock);
}

int hmm__parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s)
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}
