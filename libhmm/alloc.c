/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - libhmm's own memory: every object libhmm allocates lives here,
 * off the program's heap, and every mapping of libhmm's own is recorded so
 * that migration leaves it alone.
 *
 * Why.  Migration moves whole pages.  A malloc(3)'d buffer that the program
 * migrates shares its first and last page with whatever malloc put next to
 * it; if that were one of libhmm's own objects (a mirror, a page's record in
 * migrate.c's table, a radix node), the thread that serves CPU faults on
 * migrated memory would fault on it itself while resolving a fault, and
 * wait for itself forever; so would any thread holding a lock that server
 * needs.  The kernel has no such problem because its data is not in user
 * pages.  Here libhmm's data is in mappings of its own, made with the raw
 * system calls (no interposition, no invalidation), named "[anon:libhmm]"
 * in /proc/PID/maps where the kernel has anonymous mapping names.
 *
 * The registry.  The allocator's mappings, the pools' device memory, the
 * zero page, libhmm's threads' stacks and libhmm's own data segment are
 * recorded (hmm__own_mmap, hmm__own_register); hmm__snapshot does not count
 * them as anonymous memory, so a migration whose range covers them skips
 * their pages.  A mapping is mapped and recorded, and unrecorded and
 * unmapped, under the registry's lock, so that no snapshot sees it mapped
 * but not recorded.
 *
 * The allocator.  Sizes up to SMALL_MAX are served from size classes: a
 * chunk of CHUNK bytes, aligned to CHUNK, is cut into blocks of one class;
 * its first block slot holds the chunk's header.  A block's class is found
 * from its address (round down to CHUNK), so blocks carry no header of
 * their own and a power-of-two class gives blocks aligned to their size.
 * Each class has a free list under its own lock.  Chunks are never given
 * back: libhmm's small objects come and go with devices, mirrors and
 * migrated pages, and their peak is what it keeps, as malloc arenas do.
 * Larger sizes get a mapping of their own, starting at a multiple of CHUNK
 * with the header there (the payload at most CHUNK / 2 further); freeing
 * one unmaps it.
 *
 * Under AddressSanitizer the C library's allocator is used instead, so that
 * ASan keeps checking libhmm's own objects for overflows, use after free
 * and leaks; that build does not have the guarantee above for them (the
 * registry still holds the rest).
 *
 * fork().  A fork handler may not wait for a lock that a thread stuck in a
 * CPU fault on migrated memory holds, since serving that fault allocates;
 * so the child starts the allocator afresh instead (locks, empty free
 * lists: the parent's free blocks are lost to the child, a copy of memory
 * it never writes), and only the registry's lock, which its holders never
 * hold across anything that can fault, is taken across fork.
 *
 * Lock order: a class's lock, then chunk_lock, then own.lock; big blocks
 * take own.lock alone.  All below hmm-internal.h's: a thread holding one
 * waits for nothing else and never touches memory that can migrate.
 */
#define _GNU_SOURCE
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif

/* ---------------------------------------------------------------- registry */

struct own_map {
	uint64_t start, end;
};

/* Sorted by address.  The array is a mapping of its own, and in itself. */
static struct {
	pthread_mutex_t lock;
	struct own_map *v;
	size_t n, cap;
	pthread_once_t segment_once;
} own = { .lock = PTHREAD_MUTEX_INITIALIZER, .segment_once = PTHREAD_ONCE_INIT };

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

/* Room for one more entry.  Context: own.lock held.  Return: false if none. */
static bool own_room(void)
{
	size_t cap = own.cap ? own.cap * 2 : 256;
	struct own_map *v, *old = own.v;
	size_t old_cap = own.cap;

	if (own.n + 2 <= own.cap) /* this one, and the array's own when it grows */
		return true;
	v = hmm__sys_mmap(NULL, cap * sizeof(*v), PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v == MAP_FAILED)
		return false;
	if (own.n)
		memcpy(v, old, own.n * sizeof(*v));
	own.v = v;
	own.cap = cap;
	if (old) {
		own_remove((uint64_t)(uintptr_t)old);
		hmm__sys_munmap(old, old_cap * sizeof(*old));
	}
	own_insert((uint64_t)(uintptr_t)v, (uint64_t)(uintptr_t)v + cap * sizeof(*v));
	return true;
}

/* Name a new mapping, where the kernel can (CONFIG_ANON_VMA_NAME); nothing
 * depends on it, and errno is left as it was. */
static void name(void *p, size_t len)
{
	int saved = errno;

	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p, len, "libhmm");
	errno = saved;
}

void *hmm__own_mmap(void *addr, size_t len, int prot, int flags)
{
	void *p = MAP_FAILED;

	pthread_mutex_lock(&own.lock);
	if (own_room()) {
		p = hmm__sys_mmap(addr, len, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED) {
			if (flags & MAP_FIXED) /* it may replace a recorded one */
				own_remove((uint64_t)(uintptr_t)p);
			own_insert((uint64_t)(uintptr_t)p, (uint64_t)(uintptr_t)p + len);
		}
	} else {
		errno = ENOMEM;
	}
	pthread_mutex_unlock(&own.lock);
	if (p != MAP_FAILED)
		name(p, len);
	return p;
}

int hmm__own_munmap(void *addr, size_t len)
{
	int err;

	pthread_mutex_lock(&own.lock);
	own_remove((uint64_t)(uintptr_t)addr);
	err = hmm__sys_munmap(addr, len);
	pthread_mutex_unlock(&own.lock);
	return err;
}

void hmm__own_register(const void *addr, size_t len)
{
	pthread_mutex_lock(&own.lock);
	if (own_room())
		own_insert((uint64_t)(uintptr_t)addr, (uint64_t)(uintptr_t)addr + len);
	pthread_mutex_unlock(&own.lock);
}

void hmm__own_unregister(const void *addr)
{
	pthread_mutex_lock(&own.lock);
	own_remove((uint64_t)(uintptr_t)addr);
	pthread_mutex_unlock(&own.lock);
}

/* libhmm's writable segment (.data and .bss, whose tail is anonymous
 * memory): the one that holds the registry itself. */
static int segment_of_registry(struct dl_phdr_info *info, size_t size, void *arg)
{
	uint64_t me = (uint64_t)(uintptr_t)&own, ps = hmm__sys_page_size();

	(void)size, (void)arg;
	for (unsigned i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uint64_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;

		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_W) && s <= me && me < e) {
			hmm__own_register((void *)(uintptr_t)(s & ~(ps - 1)),
					  ((e + ps - 1) & ~(ps - 1)) - (s & ~(ps - 1)));
			return 1;
		}
	}
	return 0;
}

static void register_segment(void)
{
	dl_iterate_phdr(segment_of_registry, NULL);
}

void *hmm__own_stack_begin(void)
{
	pthread_attr_t a;
	void *addr = NULL;
	size_t size = 0;

	if (pthread_getattr_np(pthread_self(), &a))
		return NULL;
	if (!pthread_attr_getstack(&a, &addr, &size) && addr)
		hmm__own_register(addr, size);
	pthread_attr_destroy(&a);
	return addr;
}

void hmm__own_stack_end(void *stack)
{
	if (stack)
		hmm__own_unregister(stack);
}

static void own_lock(void)
{
	pthread_mutex_lock(&own.lock);
}

static void own_unlock(void)
{
	pthread_mutex_unlock(&own.lock);
}

/* Its holders never fault nor wait for anything: it can be held across
 * fork(), and a child sees a registry that no thread was changing. */
__attribute__((constructor(101))) static void own_init(void)
{
	pthread_atfork(own_lock, own_unlock, own_unlock);
}

void hmm__alloc_own_ranges(uint64_t start, uint64_t end,
			   void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
	pthread_once(&own.segment_once, register_segment);
	pthread_mutex_lock(&own.lock);
	for (size_t i = own_find(start); i < own.n && own.v[i].start < end; i++)
		fn(arg, own.v[i].start > start ? own.v[i].start : start,
		   own.v[i].end < end ? own.v[i].end : end);
	pthread_mutex_unlock(&own.lock);
}

/* ------------------------------------------------------------- allocator */

#if !defined(__SANITIZE_ADDRESS__)

#define CHUNK ((size_t)256 << 10) /* a small class's chunk; every mapping's alignment */
#define CHUNKS_PER_MAP 16	  /* chunks mapped at once */
#define SMALL_MAX ((size_t)16384) /* larger sizes get their own mapping */
#define BIG_OFFSET ((size_t)64)	  /* a large block's payload, from its mapping */
#define MAGIC_SMALL 0x686d6d73u	  /* "hmms" */
#define MAGIC_BIG 0x686d6d62u	  /* "hmmb" */

/*
 * Multiples of 16, each at most 1.5 times the one before.  Up to 16 KiB: a
 * page table's table (a page of entries and a count) is a small block, not
 * a mapping; mmap and munmap take the mm's lock for writing, which made
 * the device faults of several compute units wait for each other's
 * MADV_POPULATE_WRITE.
 */
static const uint32_t class_size[] = {
	16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
	6144, 8192, 12288, 16384,
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
} heap = { .chunk_lock = PTHREAD_MUTEX_INITIALIZER };

/* See "fork()" above. */
static void heap_in_child(void)
{
	for (size_t i = 0; i < NCLASSES; i++) {
		pthread_mutex_init(&heap.cls[i].lock, NULL);
		heap.cls[i].free = NULL;
		heap.cls[i].next = heap.cls[i].end = NULL;
	}
	pthread_mutex_init(&heap.chunk_lock, NULL);
	heap.spare = heap.spare_end = NULL;
}

/* Before any other part of libhmm registers fork handlers (they do so on
 * first use): the child's handlers run in that order, and theirs may
 * allocate. */
__attribute__((constructor(101))) static void heap_init(void)
{
	for (size_t i = 0; i < NCLASSES; i++)
		pthread_mutex_init(&heap.cls[i].lock, NULL);
	pthread_atfork(NULL, NULL, heap_in_child);
}

/*
 * A mapping of len bytes (a multiple of the page size) at a multiple of
 * CHUNK, recorded.  Return: it, or NULL.
 */
static void *map_aligned(size_t len)
{
	char *p;
	uintptr_t a = 0;

	pthread_mutex_lock(&own.lock);
	p = own_room() ? hmm__sys_mmap(NULL, len + CHUNK, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
		       : MAP_FAILED;
	if (p != MAP_FAILED) {
		a = ((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
		if (a > (uintptr_t)p)
			hmm__sys_munmap(p, a - (uintptr_t)p);
		hmm__sys_munmap((char *)a + len, (uintptr_t)p + CHUNK - a);
		own_insert(a, a + len);
	}
	pthread_mutex_unlock(&own.lock);
	if (!a)
		return NULL;
	name((void *)a, len);
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

/* A block of n bytes at offset off (>= BIG_OFFSET, at most CHUNK / 2). */
static void *big_alloc(size_t n, size_t off)
{
	size_t ps = (size_t)hmm__sys_page_size(), len;
	struct big_header *h;

	if (n > SIZE_MAX - off - CHUNK - ps)
		return NULL;
	len = (n + off + ps - 1) & ~(ps - 1);
	h = map_aligned(len);
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
	if (!align || (align & (align - 1)) || align > CHUNK / 2) {
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
		h->magic = 0;
		hmm__own_munmap(h, ((struct big_header *)h)->len);
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

#endif
