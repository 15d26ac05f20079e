/* SPDX-License-Identifier: MIT */
/*
 * hmm-internal.h - libhmm's private interfaces, shared by the library and by
 * the hmmfs daemon (which links the same objects through libhmm-core.la).
 *
 * Naming: hmm_ is public (hmm.h), hmm__ is internal but not static.
 *
 * Lock order (outermost first).  A thread holding a lock may only take locks
 * that appear below it:
 *   1. hmm__pool.lock      (leaf: never held while calling out)
 */
#ifndef HMM_INTERNAL_H
#define HMM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HMM_EXPORT __attribute__((visibility("default")))

#ifndef NDEBUG
#include <assert.h>
#define HMM_ASSERT(x) assert(x)
#else
#define HMM_ASSERT(x) ((void)0)
#endif

/* ------------------------------------------------------------------------
 * radix.c - a sparse map from a 64-bit index to a non-NULL pointer.
 *
 * A tree of 64-way nodes, as tall as the largest index needs.  Memory is
 * proportional to the number of entries and their spread, so a file of
 * any size with few pages costs little.  Not thread-safe: the owner locks.
 * ------------------------------------------------------------------------ */
struct hmm__radix {
	void *root;      /* a node, or NULL when empty */
	unsigned height; /* levels below and including root; 0 when empty */
	uint64_t count;  /* number of entries */
};

void hmm__radix_init(struct hmm__radix *r);
void *hmm__radix_lookup(const struct hmm__radix *r, uint64_t index);
/* Return: 0, -EEXIST if index is taken, -ENOMEM. */
int hmm__radix_insert(struct hmm__radix *r, uint64_t index, void *item);
/* Remove and return the entry at index, or NULL if there is none. */
void *hmm__radix_delete(struct hmm__radix *r, uint64_t index);
/*
 * Find the first entry at or after *index.  Return: the entry, with *index
 * set to where it lives, or NULL (and *index unchanged) if there is none.
 */
void *hmm__radix_next(const struct hmm__radix *r, uint64_t *index);
/* Remove every entry at index >= first, passing each to fn (may be NULL). */
void hmm__radix_truncate(struct hmm__radix *r, uint64_t first,
			 void (*fn)(void *item, void *arg), void *arg);

/* ------------------------------------------------------------------------
 * pool.c - a memory pool of fixed capacity, handed out in pages.
 *
 * Pages come from 2 MiB (or page-sized, if larger) chunks mapped on demand,
 * optionally bound to a NUMA node.  Up to 32 MiB of chunks whose pages are
 * all free stay mapped for reuse; beyond that they go back to the system,
 * so memory use follows the data held.
 *
 * Invariant: used_pages == sum over chunks of (pages_per_chunk - nfree)
 *            and used_pages <= capacity_pages.
 * ------------------------------------------------------------------------ */
struct hmm__chunk;

struct hmm__pool {
	size_t page_size;        /* bytes per page: power of two, >= system page */
	size_t chunk_size;       /* bytes per chunk: multiple of page_size */
	uint64_t capacity_pages; /* fixed at init */
	int numa_node;           /* node to bind chunks to, or -1 */

	pthread_mutex_t lock;
	uint64_t used_pages;         /* protected by lock */
	struct hmm__chunk *partial;  /* chunks with free pages; protected by lock */
	struct hmm__radix chunks;    /* chunk address >> chunk shift -> chunk; protected by lock */
	unsigned chunk_shift;
	uint64_t nchunks;            /* protected by lock */
	uint64_t nempty;             /* chunks with every page free; protected by lock */
};

/*
 * hmm__pool_init() - set up a pool of capacity bytes (rounded down to pages).
 * Return: 0, -EINVAL if page_size is not a power of two multiple of the
 * system page size.
 */
int hmm__pool_init(struct hmm__pool *p, size_t page_size, uint64_t capacity,
		   int numa_node);
/* Free every chunk.  All pages must have been freed first. */
void hmm__pool_destroy(struct hmm__pool *p);
/*
 * hmm__pool_alloc() - take one page.  *zeroed tells whether it is known to
 * hold zeros (fresh from the system); otherwise its contents are undefined.
 * Context: takes p->lock.
 * Return: 0 with *page set, -ENOSPC at capacity, -ENOMEM if the system has no memory.
 */
int hmm__pool_alloc(struct hmm__pool *p, void **page, bool *zeroed);
/* Context: takes p->lock. */
void hmm__pool_free(struct hmm__pool *p, void *page);
/* Pages in use now. Context: takes p->lock. */
uint64_t hmm__pool_used(struct hmm__pool *p);

/* Parse "123", "4K", "16M", "2G", "1T" (powers of 1024). Return: 0 or -EINVAL/-ERANGE. */
int hmm__parse_size(const char *s, uint64_t *out);

#endif /* HMM_INTERNAL_H */
