/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - libhmm's own memory: every object libhmm allocates lives here,
 * off the program's heap.
 *
 * Why.  Migration moves whole pages.  A malloc(3)'d buffer that the program
 * migrates shares its first and last page with whatever malloc put next to
 * it; if that were one of libhmm's own objects (a mirror, a page's record in
 * migrate.c's table, a radix node), the thread that serves CPU faults on
 * migrated memory would fault on it itself while resolving a fault, and
 * wait for itself forever; so would any thread holding a lock that server
 * needs.  The kernel has no such problem because its data is not in user
 * pages.  Here libhmm's data is in mappings of its own, made with the raw
 * system calls (no interposition, no invalidation), recorded here so that
 * migration refuses them (hmm__snapshot does not count them as anonymous
 * memory), and named "[anon:libhmm]" in /proc/PID/maps where the kernel
 * has anonymous mapping names.
 *
 * How.  Sizes up to SMALL_MAX are served from size classes: a chunk of
 * CHUNK bytes, aligned to CHUNK, is cut into blocks of one class; its first
 * block slot holds the chunk's header.  A block's class is found from its
 * address (round down to CHUNK), so blocks carry no header of their own and
 * a power-of-two class gives blocks aligned to their size.  Each class has
 * a free list under its own lock.  Chunks are never given back: libhmm's
 * small objects come and go with devices, mirrors and migrated pages, and
 * their peak is what it keeps, as malloc arenas do.  Larger sizes get a
 * mapping of their own, starting at a multiple of CHUNK with the header
 * there; freeing one unmaps it.
 *
 * Under AddressSanitizer the C library's allocator is used instead, so that
 * ASan keeps checking libhmm's own objects for overflows, use after free
 * and leaks; that build does not have the guarantee above.
 *
 * Lock order: a class's lock, then chunk_lock or big_lock, then own.lock;
 * all below hmm-internal.h's.  A thread holding one waits for nothing
 * else and never touches memory that can migrate, so a fork
 * (pthread_atfork handlers take them all, after every other handler's
 * prepare) and the fault server are safe.
 */
#define _GNU_SOURCE
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#if !defined(__SANITIZE_ADDRESS__)

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif

#define CHUNK ((size_t)64 << 10)	 /* a small class's chunk; every mapping's alignment */
#define CHUNKS_PER_MAP 16		 /* chunks mapped at once */
#define SMALL_MAX ((size_t)4096)	 /* larger sizes get their own mapping */
#define BIG_OFFSET ((size_t)64)		 /* a large block's payload, from its mapping */
#define MAGIC_SMALL 0x686d6d73u		 /* "hmms" */
#define MAGIC_BIG 0x686d6d62u		 /* "hmmb" */

/* Multiples of 16, each at most 1.5 times the one before. */
static const uint32_t class_size[] = {
	16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
};
#define NCLASSES (sizeof(class_size) / sizeof(class_size[0]))

struct chunk_header { /* a chunk's first block slot */
	uint32_t magic;	  /* MAGIC_SMALL */
	uint32_t cls;	  /* index in class_size */
};

struct big_header { /* a large block's mapping starts with this */
	uint32_t magic;	  /* MAGIC_BIG */
	uint32_t unused;
	size_t len;	  /* of the whole mapping */
};

struct free_block {
	struct free_block *next;
};

static struct {
	struct {
		pthread_mutex_t lock;
		struct free_block *free;  /* protected by lock */
		char *next, *end;	  /* the chunk being cut; protected by lock */
	} cls[NCLASSES];
	pthread_mutex_t chunk_lock;	  /* spare chunks */
	char *spare, *spare_end;	  /* protected by chunk_lock */
	/* Taken around mapping and unmapping large blocks: orders a block's
	 * unmapping before a later mapping at the same address, for TSan,
	 * which does not see the raw system calls. */
	pthread_mutex_t big_lock;
} heap = {
	.chunk_lock = PTHREAD_MUTEX_INITIALIZER,
	.big_lock = PTHREAD_MUTEX_INITIALIZER,
};

/*
 * libhmm's mappings, sorted by address, for hmm__alloc_own_ranges.  The
 * array is a mapping of its own, and in the array.
 */
struct own_map {
	uint64_t start, end;
};

static struct {
	pthread_mutex_t lock;
	struct own_map *v;
	size_t n, cap;
} own = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Lock order: a class's lock, then chunk_lock or big_lock, then own.lock. */
static void lock_all(void)
{
	for (size_t i = 0; i < NCLASSES; i++)
		pthread_mutex_lock(&heap.cls[i].lock);
	pthread_mutex_lock(&heap.chunk_lock);
	pthread_mutex_lock(&heap.big_lock);
	pthread_mutex_lock(&own.lock);
}

static void unlock_all(void)
{
	pthread_mutex_unlock(&own.lock);
	pthread_mutex_unlock(&heap.big_lock);
	pthread_mutex_unlock(&heap.chunk_lock);
	for (size_t i = NCLASSES; i-- > 0;)
		pthread_mutex_unlock(&heap.cls[i].lock);
}

/* The first entry that ends above addr.  Context: own.lock held. */
static size_t own_find(uint64_t addr)
{
	size_t lo = 0, hi = own.n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (own.v[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Context: own.lock held, own.n < own.cap. */
static void own_insert(uint64_t s, uint64_t e)
{
	size_t i = own_find(s);

	memmove(&own.v[i + 1], &own.v[i], (own.n - i) * sizeof(*own.v));
	own.v[i] = (struct own_map){ s, e };
	own.n++;
}

/* Context: own.lock held. */
static void own_remove(uint64_t s)
{
	size_t i = own_find(s);

	if (i < own.n && own.v[i].start == s) {
		memmove(&own.v[i], &own.v[i + 1], (own.n - i - 1) * sizeof(*own.v));
		own.n--;
	}
}

/* Record [s, e) as libhmm's.  Return: false if the registry cannot grow. */
static bool own_add(uint64_t s, uint64_t e)
{
	bool ok = true;

	pthread_mutex_lock(&own.lock);
	if (own.n + 2 > own.cap) { /* room for this one and the array's own */
		size_t cap = own.cap ? own.cap * 2 : 256;
		struct own_map *v = hmm__sys_mmap(NULL, cap * sizeof(*v), PROT_READ | PROT_WRITE,
						  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (v == MAP_FAILED) {
			ok = false;
		} else {
			struct own_map *old = own.v;
			size_t old_cap = own.cap;

			if (own.n)
				memcpy(v, old, own.n * sizeof(*v));
			own.v = v;
			own.cap = cap;
			if (old) {
				own_remove((uint64_t)(uintptr_t)old);
				hmm__sys_munmap(old, old_cap * sizeof(*old));
			}
			own_insert((uint64_t)(uintptr_t)v, (uint64_t)(uintptr_t)v + cap * sizeof(*v));
		}
	}
	if (ok)
		own_insert(s, e);
	pthread_mutex_unlock(&own.lock);
	return ok;
}

static void own_del(uint64_t s)
{
	pthread_mutex_lock(&own.lock);
	own_remove(s);
	pthread_mutex_unlock(&own.lock);
}

void hmm__alloc_own_ranges(uint64_t start, uint64_t end,
			   void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
	pthread_mutex_lock(&own.lock);
	for (size_t i = own_find(start); i < own.n && own.v[i].start < end; i++)
		fn(arg, own.v[i].start > start ? own.v[i].start : start,
		   own.v[i].end < end ? own.v[i].end : end);
	pthread_mutex_unlock(&own.lock);
}

/*
 * Before any other part of libhmm registers fork handlers (they do so on
 * first use), so that ours take the locks last and release them first:
 * another handler's prepare may allocate.
 */
__attribute__((constructor(101))) static void heap_init(void)
{
	for (size_t i = 0; i < NCLASSES; i++)
		pthread_mutex_init(&heap.cls[i].lock, NULL);
	pthread_atfork(lock_all, unlock_all, unlock_all);
}

/* A mapping of len bytes (a multiple of the page size) aligned to CHUNK, or NULL. */
static void *map_aligned(size_t len)
{
	char *p = hmm__sys_mmap(NULL, len + CHUNK, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	a = ((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
	if (a > (uintptr_t)p)
		hmm__sys_munmap(p, a - (uintptr_t)p);
	if ((uintptr_t)p + CHUNK > a)
		hmm__sys_munmap((char *)a + len, (uintptr_t)p + CHUNK - a);
	if (!own_add(a, a + len)) {
		hmm__sys_munmap((void *)a, len);
		return NULL;
	}
	/* A name shows it in /proc/PID/maps, where the kernel has names
	 * (CONFIG_ANON_VMA_NAME); nothing depends on it. */
	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, a, len, "libhmm");
	return (void *)a;
}

/* Context: the class's lock held.  Return: false when out of memory. */
static bool refill(size_t c)
{
	char *chunk = NULL;
	struct chunk_header *h;

	pthread_mutex_lock(&heap.chunk_lock);
	if (heap.spare == heap.spare_end) {
		char *m = map_aligned(CHUNK * CHUNKS_PER_MAP);

		if (m) {
			heap.spare = m;
			heap.spare_end = m + CHUNK * CHUNKS_PER_MAP;
		}
	}
	if (heap.spare != heap.spare_end) {
		chunk = heap.spare;
		heap.spare += CHUNK;
	}
	pthread_mutex_unlock(&heap.chunk_lock);
	if (!chunk)
		return false;
	h = (struct chunk_header *)chunk;
	h->magic = MAGIC_SMALL;
	h->cls = (uint32_t)c;
	heap.cls[c].next = chunk + class_size[c];
	heap.cls[c].end = chunk + CHUNK - (CHUNK % class_size[c]);
	return true;
}

/* The smallest class that holds n bytes aligned to align (a power of two). */
static size_t class_of(size_t n, size_t align)
{
	for (size_t c = 0; c < NCLASSES; c++)
		if (class_size[c] >= n && class_size[c] % align == 0)
			return c;
	return NCLASSES;
}

static void *small_alloc(size_t c)
{
	void *p = NULL;

	pthread_mutex_lock(&heap.cls[c].lock);
	if (heap.cls[c].free) {
		p = heap.cls[c].free;
		heap.cls[c].free = heap.cls[c].free->next;
	} else if (heap.cls[c].next != heap.cls[c].end || refill(c)) {
		p = heap.cls[c].next;
		heap.cls[c].next += class_size[c];
	}
	pthread_mutex_unlock(&heap.cls[c].lock);
	return p;
}

/* A block of n bytes at offset off (>= BIG_OFFSET, a divisor of CHUNK). */
static void *big_alloc(size_t n, size_t off)
{
	size_t len;
	struct big_header *h;

	size_t ps = (size_t)hmm__sys_page_size();

	if (n > SIZE_MAX - off - CHUNK - ps)
		return NULL;
	len = (n + off + ps - 1) & ~(ps - 1);
	pthread_mutex_lock(&heap.big_lock);
	h = map_aligned(len);
	pthread_mutex_unlock(&heap.big_lock);
	if (!h)
		return NULL;
	h->magic = MAGIC_BIG;
	h->len = len;
	return (char *)h + off;
}

static void *alloc_aligned(size_t n, size_t align)
{
	size_t c = class_of(n ? n : 1, align);
	void *p;

	if (c < NCLASSES)
		p = small_alloc(c);
	else
		p = big_alloc(n, align > BIG_OFFSET ? align : BIG_OFFSET);
	if (!p)
		errno = ENOMEM;
	return p;
}

static void *base_of(const void *p)
{
	return (void *)((uintptr_t)p & ~(uintptr_t)(CHUNK - 1));
}

/* How many bytes p may hold. */
static size_t usable(const void *p)
{
	const struct chunk_header *h = base_of(p);

	if (h->magic == MAGIC_SMALL)
		return class_size[h->cls];
	return ((const struct big_header *)h)->len - (size_t)((const char *)p - (const char *)h);
}

void *hmm__malloc(size_t n)
{
	return alloc_aligned(n, 16);
}

void *hmm__calloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	p = alloc_aligned(n * size, 16);
	/* A large block is a fresh mapping: zero already. */
	if (p && n * size <= SMALL_MAX)
		memset(p, 0, n * size);
	return p;
}

void *hmm__aligned_alloc(size_t align, size_t n)
{
	if (!align || (align & (align - 1)) || align > CHUNK) {
		errno = EINVAL;
		return NULL;
	}
	return alloc_aligned(n, align < 16 ? 16 : align);
}

void hmm__free(void *p)
{
	struct chunk_header *h;

	if (!p)
		return;
	h = base_of(p);
	if (h->magic == MAGIC_SMALL && (char *)p != (char *)h) {
		struct free_block *b = p;
		size_t c = h->cls;

		pthread_mutex_lock(&heap.cls[c].lock);
		b->next = heap.cls[c].free;
		heap.cls[c].free = b;
		pthread_mutex_unlock(&heap.cls[c].lock);
	} else if (h->magic == MAGIC_BIG) {
		pthread_mutex_lock(&heap.big_lock);
		h->magic = 0;
		own_del((uint64_t)(uintptr_t)h);
		hmm__sys_munmap(h, ((struct big_header *)h)->len);
		pthread_mutex_unlock(&heap.big_lock);
	} else {
		fprintf(stderr, "libhmm: freeing %p, which libhmm did not allocate\n", p);
		abort();
	}
}

void *hmm__realloc(void *p, size_t n)
{
	void *q;
	size_t have;

	if (!p)
		return hmm__malloc(n);
	have = usable(p);
	if (n <= have && (n > have / 2 || have <= 16))
		return p;
	q = hmm__malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, n < have ? n : have);
	hmm__free(p);
	return q;
}

#else /* AddressSanitizer: the C library's allocator, checked by ASan */

void *hmm__malloc(size_t n)
{
	return malloc(n);
}

void *hmm__calloc(size_t n, size_t size)
{
	return calloc(n, size);
}

void *hmm__aligned_alloc(size_t align, size_t n)
{
	void *p = NULL;
	int err = posix_memalign(&p, align, n);

	if (err) {
		errno = err;
		return NULL;
	}
	return p;
}

void hmm__free(void *p)
{
	free(p);
}

void *hmm__realloc(void *p, size_t n)
{
	return realloc(p, n);
}

void hmm__alloc_own_ranges(uint64_t start, uint64_t end,
			   void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
	(void)start, (void)end, (void)fn, (void)arg;
}

#endif
