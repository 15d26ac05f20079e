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
 *
 * Owned memory.  A page can also come from memory that belongs to one
 * object (an hmmfs file's pages on a device): the owner's chunks are
 * consecutive slices of a memfd of its own, so the object's users can be
 * handed a descriptor of exactly that object's memory to map (read-only
 * for a read-only user), and nothing else.  An owner's pages come only from
 * its chunks.  Owned chunks are not populated in advance (an owner may hold
 * a single page); hmm__pool_alloc_owned populates the pages it hands out,
 * and that costs (shmem pages are several times dearer to allocate than
 * anonymous ones), so an owned chunk whose pages are all free keeps its
 * memory, "idle", for the owner's next pages.  Idle memory is reclaimed
 * (punched out of the memfd: every mapping of it, in any process, loses it
 * at once) when a new owned chunk would bring the memory held by owned
 * chunks past the capacity plus the spare budget, and when its owner goes.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POOL_MIN_CHUNK (2u << 20)
/* Empty chunks kept mapped for reuse, so freeing and refilling a file does
 * not pay for mapping and faulting memory in again. */
#define POOL_SPARE_BYTES (32u << 20)

#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 1U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 2U
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct hmm__pool_owner {
	int fd;                     /* memfd: the owner's memory in this pool */
	uint64_t size;              /* bytes of fd carved into chunks */
	struct hmm__chunk *partial; /* its chunks with free pages */
	struct hmm__chunk *chunks;  /* all its chunks, through owner_next */
};

struct hmm__chunk {
	void *base;
	struct hmm__pool_owner *owner; /* NULL: anonymous memory */
	uint64_t offset;               /* of base in owner->fd */
	struct hmm__chunk *owner_next;
	size_t nfree;               /* pages on the free list */
	size_t nfresh;              /* pages not handed out since the chunk was
				     * mapped or released, at its end */
	bool released;              /* MADV_FREE'd: fresh pages may hold old data */
	bool held;                  /* owned: holds memory (not punched since use) */
	bool idle;                  /* on pool->idle */
	struct hmm__chunk *idle_next, *idle_prev;
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

/* The list of chunks with free pages that c belongs on. */
static struct hmm__chunk **partial_list(struct hmm__pool *p, struct hmm__pool_owner *o)
{
	return o ? &o->partial : &p->partial;
}

static void partial_add(struct hmm__pool *p, struct hmm__chunk *c)
{
	struct hmm__chunk **head = partial_list(p, c->owner);

	c->next = *head;
	if (c->next)
		c->next->pprev = &c->next;
	c->pprev = head;
	*head = c;
}

static void partial_remove(struct hmm__chunk *c)
{
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	c->next = NULL;
	c->pprev = NULL;
}

/* The idle list is oldest first: reclaim takes what idled longest. */
static void idle_add(struct hmm__pool *p, struct hmm__chunk *c)
{
	c->idle = true;
	c->idle_next = NULL;
	c->idle_prev = p->idle_tail;
	if (p->idle_tail)
		p->idle_tail->idle_next = c;
	else
		p->idle = c;
	p->idle_tail = c;
}

static void idle_remove(struct hmm__pool *p, struct hmm__chunk *c)
{
	if (!c->idle)
		return;
	if (c->idle_prev)
		c->idle_prev->idle_next = c->idle_next;
	else
		p->idle = c->idle_next;
	if (c->idle_next)
		c->idle_next->idle_prev = c->idle_prev;
	else
		p->idle_tail = c->idle_prev;
	c->idle_next = c->idle_prev = NULL;
	c->idle = false;
}

/* Punch an idle chunk's memory out.  Its free list lived there: every page
 * is fresh again.  Context: p->lock held. */
static void punch(struct hmm__pool *p, struct hmm__chunk *c)
{
	idle_remove(p, c);
	fallocate(c->owner->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)c->offset,
		  (off_t)p->chunk_size);
	c->free = NULL;
	c->nfree = 0;
	c->nfresh = p->chunk_size / p->page_size;
	if (c->held) {
		c->held = false;
		p->nheld--;
	}
}

/* Before a new owned chunk: reclaim idle ones so that owned memory stays
 * within the capacity plus the spare budget.  Context: p->lock held. */
static void reclaim_idle(struct hmm__pool *p)
{
	uint64_t limit = p->capacity_pages * p->page_size + POOL_SPARE_BYTES;

	while (p->idle && (p->nheld + 1) * p->chunk_size > limit)
		punch(p, p->idle);
}

/*
 * Reserve size bytes of address space aligned to size, so that a page finds
 * its chunk by address.  Return: the base, or NULL.
 */
static char *reserve_aligned(size_t size)
{
	char *raw, *base;

	raw = hmm__sys_mmap(NULL, 2 * size, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	base = (char *)(((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1));
	if (base > raw)
		hmm__sys_munmap(raw, (size_t)(base - raw));
	if (base + size < raw + 2 * size)
		hmm__sys_munmap(base + size, (size_t)(raw + 2 * size - (base + size)));
	return base;
}

/* Back the reserved base with anonymous memory, or with the owner's memfd
 * grown by a chunk.  Return: 0 or a negative errno. */
static int chunk_back(struct hmm__pool *p, struct hmm__pool_owner *o, char *base,
		      uint64_t *offset)
{
	size_t size = p->chunk_size;
	void *m;

	if (!o) {
		/* Device memory is libhmm's own: never migrated. */
		m = hmm__own_mmap(base, size, PROT_READ | PROT_WRITE, MAP_NORESERVE | MAP_FIXED);
		return m == MAP_FAILED ? -errno : 0;
	}
	if (ftruncate(o->fd, (off_t)(o->size + size)) < 0)
		return -errno;
	m = hmm__sys_mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, o->fd,
			  (off_t)o->size);
	if (m == MAP_FAILED) {
		int err = -errno;

		if (ftruncate(o->fd, (off_t)o->size) < 0)
			err = -errno;
		return err;
	}
	*offset = o->size;
	o->size += size;
	return 0;
}

/* A new chunk for the owner o (NULL: anonymous).  Context: p->lock held. */
static struct hmm__chunk *chunk_map(struct hmm__pool *p, struct hmm__pool_owner *o)
{
	size_t size = p->chunk_size;
	struct hmm__chunk *c = hmm__calloc(1, sizeof(*c));
	char *base;

	if (!c)
		return NULL;
	if (o)
		reclaim_idle(p);
	base = reserve_aligned(size);
	if (!base || chunk_back(p, o, base, &c->offset) < 0) {
		if (base)
			hmm__own_munmap(base, size);
		hmm__free(c);
		return NULL;
	}
	if (p->numa_node >= 0 && numa_available() >= 0)
		numa_tonode_memory(base, size, p->numa_node);
	if (!o) {
		/* Fault the whole chunk in at once, as huge pages where the
		 * kernel allows, rather than a page at a time in whoever first
		 * writes to it (MADV_POPULATE_WRITE is a no-op before 5.14). */
		hmm__sys_madvise(base, size, MADV_HUGEPAGE);
		hmm__sys_madvise(base, size, MADV_POPULATE_WRITE);
	}
	c->base = base;
	c->owner = o;
	c->nfresh = size / p->page_size;
	if (hmm__radix_insert(&p->chunks, (uintptr_t)base >> p->chunk_shift, c) < 0) {
		hmm__own_munmap(base, size);
		hmm__free(c);
		return NULL;
	}
	if (o) {
		c->owner_next = o->chunks;
		o->chunks = c;
		c->held = true;
		p->nheld++;
	}
	p->nchunks++;
	return c;
}

/* Take one page of the owner o (NULL: anonymous).
 * Context: p->lock held; the caller checked the capacity. */
static int take_locked(struct hmm__pool *p, struct hmm__pool_owner *o, void **page, bool *zeroed)
{
	size_t per_chunk = p->chunk_size / p->page_size;
	struct hmm__chunk *c;
	void *pg;

	c = *partial_list(p, o);
	if (!c) {
		c = chunk_map(p, o);
		if (!c)
			return -ENOMEM;
		partial_add(p, c);
		p->nempty++;
	}
	if (c->nfree + c->nfresh == per_chunk) {
		p->nempty--;
		idle_remove(p, c);
		if (o && !c->held) {
			c->held = true;
			p->nheld++;
		}
	}
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
		if (c->owner) {
			idle_add(p, c);
		} else if (p->nempty * p->chunk_size >= POOL_SPARE_BYTES) {
			/* Beyond the spare chunks: give the memory back, keep the
			 * mapping.  The free list lived in that memory: start over. */
			hmm__sys_madvise(c->base, p->chunk_size, MADV_FREE);
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
		err = take_locked(p, NULL, page, zeroed);
	pthread_mutex_unlock(&p->lock);
	return err;
}

/* n pages of the owner o (NULL: anonymous), all or none; fresh[i], if
 * fresh is not NULL, tells whether pages[i] was never handed out since its
 * memory was last mapped or punched. */
static int alloc_bulk(struct hmm__pool *p, struct hmm__pool_owner *o, size_t n, void **pages,
		      bool *fresh)
{
	struct hmm__chunk *c = NULL;
	size_t i;
	int err = 0;

	pthread_mutex_lock(&p->lock);
	if (p->capacity_pages - p->used_pages < n)
		err = -ENOSPC;
	for (i = 0; !err && i < n; i++) {
		bool zeroed;

		err = take_locked(p, o, &pages[i], &zeroed);
		if (err)
			break;
		if (fresh)
			fresh[i] = zeroed;
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

int hmm__pool_alloc_bulk(struct hmm__pool *p, size_t n, void **pages)
{
	return alloc_bulk(p, NULL, n, pages, NULL);
}

/* Populate the fresh pages (all, if fresh is NULL) in runs of adjacent
 * addresses: one system call a run, not a page fault a page in whoever
 * copies into them first.  Pages taken from a free list hold memory. */
static void populate(size_t page_size, void *const *pages, const bool *fresh, size_t n)
{
	for (size_t i = 0; i < n;) {
		char *start = pages[i];
		size_t j = i + 1;

		if (fresh && !fresh[i]) {
			i++;
			continue;
		}
		while (j < n && (!fresh || fresh[j]) &&
		       (char *)pages[j] == start + (j - i) * page_size)
			j++;
		hmm__sys_madvise(start, (j - i) * page_size, MADV_POPULATE_WRITE);
		i = j;
	}
}

int hmm__pool_alloc_owned(struct hmm__pool *p, struct hmm__pool_owner **owner, size_t n,
			  void **pages)
{
	bool *fresh;
	int err;

	pthread_mutex_lock(&p->lock);
	if (!*owner) {
		struct hmm__pool_owner *o = hmm__calloc(1, sizeof(*o));
		int fd = o ? memfd_create("hmm-device-memory", MFD_CLOEXEC | MFD_ALLOW_SEALING) : -1;

		if (fd < 0) {
			err = o ? -errno : -ENOMEM;
			hmm__free(o);
			pthread_mutex_unlock(&p->lock);
			return err;
		}
		/* Whoever it is handed to may grow it but never shrink it
		 * under the chunks mapped here. */
		fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL);
		o->fd = fd;
		*owner = o;
	}
	pthread_mutex_unlock(&p->lock);
	fresh = hmm__malloc(n ? n : 1); /* without it, populate everything */
	err = alloc_bulk(p, *owner, n, pages, fresh);
	if (!err)
		populate(p->page_size, pages, fresh, n);
	hmm__free(fresh);
	return err;
}

int hmm__pool_owner_fd(const struct hmm__pool_owner *o)
{
	return o->fd;
}

int hmm__pool_page_offset(struct hmm__pool *p, const void *page, uint64_t *offset)
{
	struct hmm__chunk *c;
	int err = -ENOENT;

	pthread_mutex_lock(&p->lock);
	c = hmm__radix_lookup(&p->chunks, (uintptr_t)page >> p->chunk_shift);
	if (c && c->owner) {
		*offset = c->offset + (uint64_t)((const char *)page - (const char *)c->base);
		err = 0;
	}
	pthread_mutex_unlock(&p->lock);
	return err;
}

void hmm__pool_owner_destroy(struct hmm__pool *p, struct hmm__pool_owner *o)
{
	size_t per_chunk = p->chunk_size / p->page_size;

	if (!o)
		return;
	pthread_mutex_lock(&p->lock);
	while (o->chunks) {
		struct hmm__chunk *c = o->chunks;

		HMM_ASSERT(c->nfree + c->nfresh == per_chunk);
		o->chunks = c->owner_next;
		if (c->pprev)
			partial_remove(c);
		idle_remove(p, c);
		if (c->held)
			p->nheld--;
		hmm__radix_delete(&p->chunks, (uintptr_t)c->base >> p->chunk_shift);
		hmm__own_munmap(c->base, p->chunk_size);
		hmm__free(c);
		p->nchunks--;
		p->nempty--;
	}
	pthread_mutex_unlock(&p->lock);
	/* Whoever still maps it keeps no memory. */
	if (o->size)
		fallocate(o->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)o->size);
	close(o->fd);
	hmm__free(o);
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

int hmm__pool_reserve(struct hmm__pool *p, uint64_t n)
{
	int err = -ENOSPC;

	pthread_mutex_lock(&p->lock);
	if (p->capacity_pages - p->used_pages >= n) {
		p->used_pages += n;
		p->reserved_pages += n;
		err = 0;
	}
	pthread_mutex_unlock(&p->lock);
	return err;
}

void hmm__pool_unreserve(struct hmm__pool *p, uint64_t n)
{
	pthread_mutex_lock(&p->lock);
	HMM_ASSERT(n <= p->reserved_pages);
	p->used_pages -= n;
	p->reserved_pages -= n;
	pthread_mutex_unlock(&p->lock);
}

void hmm__pool_add_capacity(struct hmm__pool *p, uint64_t n)
{
	pthread_mutex_lock(&p->lock);
	p->capacity_pages += n;
	pthread_mutex_unlock(&p->lock);
}

uint64_t hmm__pool_trim_capacity(struct hmm__pool *p, uint64_t keep)
{
	uint64_t drop = 0;

	pthread_mutex_lock(&p->lock);
	if (p->capacity_pages - p->used_pages > keep) {
		drop = p->capacity_pages - p->used_pages - keep;
		p->capacity_pages -= drop;
	}
	pthread_mutex_unlock(&p->lock);
	return drop;
}

uint64_t hmm__pool_capacity(struct hmm__pool *p)
{
	uint64_t pages;

	pthread_mutex_lock(&p->lock);
	pages = p->capacity_pages;
	pthread_mutex_unlock(&p->lock);
	return pages;
}

static void unmap_one(void *item, void *arg)
{
	struct hmm__pool *p = arg;
	struct hmm__chunk *c = item;

	hmm__own_munmap(c->base, p->chunk_size);
	hmm__free(c);
}

void hmm__pool_forget(struct hmm__pool *p)
{
	hmm__radix_truncate(&p->chunks, 0, unmap_one, p);
}

void hmm__pool_destroy(struct hmm__pool *p)
{
	HMM_ASSERT(p->used_pages == 0);
	hmm__pool_forget(p);
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
