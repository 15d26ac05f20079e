/* SPDX-License-Identifier: MIT */
/*
 * hmm-internal.h - libhmm's private interfaces, shared by the library and by
 * the hmmfs daemon (which links the same objects through libhmm-core.la).
 *
 * Naming: hmm_ is public (hmm.h), hmm__ is internal but not static.
 *
 * Lock order (outermost first).  A thread holding a lock may only take locks
 * that appear below it:
 *   1. hmm__fence.lock     (leaf)
 *   2. DMA engine queue locks (leaf; dma.c)
 *   3. hmm__device.lru_lock (taken under an owner's lock by moves and frees)
 *   4. hmm__pool.lock      (leaf: never held while calling out)
 *   5. the address space's lock in notifier.c (leaf: never held while
 *      calling an invalidate callback)
 *   6. the userfaultfd reader's locks (cpufault.c, uffd.c: leaves).  The
 *      reader must never wait for anything else: a thread that raised an
 *      event sleeps, whatever it holds, until the reader reads it.
 *   7. alloc.c's locks (leaves, below everything: any thread may allocate).
 */
#ifndef HMM_INTERNAL_H
#define HMM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hmm.h"

#define HMM_EXPORT __attribute__((visibility("default")))

#ifndef NDEBUG
#include <assert.h>
#define HMM_ASSERT(x) assert(x)
#else
#define HMM_ASSERT(x) ((void)0)
#endif

/*
 * libhmm's own memory (pools, grant windows) is no program's: changing its
 * mappings must not go through libhmm.so's interposed mmap, munmap and
 * madvise (invalidate.c), whose invalidations call notifiers that take
 * locks, while the caller may hold a leaf lock such as a pool's.  Nor
 * through a sanitizer's interceptors, which end in those same wrappers.
 * These are the system calls themselves.
 */
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static inline void *hmm__sys_mmap(void *addr, size_t len, int prot, int flags, int fd,
				  off_t off)
{
#ifdef SYS_mmap2 /* 32-bit: SYS_mmap is old_mmap, or absent; offset in 4 KiB units */
	return (void *)syscall(SYS_mmap2, addr, len, prot, flags, fd, (long)(off >> 12));
#else
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
#endif
}

static inline int hmm__sys_munmap(void *addr, size_t len)
{
	return (int)syscall(SYS_munmap, addr, len);
}

static inline int hmm__sys_madvise(void *addr, size_t len, int advice)
{
	return (int)syscall(SYS_madvise, addr, len, advice);
}

/*
 * libhmm's thread-local variables.  The initial-exec model reaches them at
 * a fixed offset from the thread pointer, never through __tls_get_addr and
 * the thread's DTV, which the C library allocates on the program's heap:
 * the thread that serves CPU faults must not touch memory that may have
 * migrated (alloc.c), and a kernel's unit finds itself faster so.  They are
 * few bytes, which fit the static TLS that the C library keeps for a
 * library loaded with dlopen().
 */
#define HMM_THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))

/* The system's page size, read once; any thread may be first. */
static inline uint64_t hmm__sys_page_size(void)
{
	static uint64_t ps;
	uint64_t v = __atomic_load_n(&ps, __ATOMIC_RELAXED);

	if (!v) {
		v = (uint64_t)sysconf(_SC_PAGESIZE);
		__atomic_store_n(&ps, v, __ATOMIC_RELAXED);
	}
	return v;
}

/*
 * ThreadSanitizer sees the CPU threads' locks, atomics and accesses.  It
 * does not see a device's accesses as a device's (DMA, which TSan never
 * sees on real hardware: its ordering is the invalidation protocol's), nor
 * page protections as ordering (a thread that reads memory after
 * write-protecting it with userfaultfd comes after every write to it).  So
 * a device's own accesses to memory (kernels' loads and stores, a mirror's
 * reads and writes, DMA copies), and reads ordered by a protection, are
 * bracketed by these: TSan ignores the accesses of the calling thread in
 * between.  Nothing in other builds.
 */
#if defined(__SANITIZE_THREAD__)
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define HMM_TSAN_IGNORE_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define HMM_TSAN_IGNORE_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define HMM_TSAN_IGNORE_BEGIN() ((void)0)
#define HMM_TSAN_IGNORE_END() ((void)0)
#endif

/* ------------------------------------------------------------------------
 * alloc.c - libhmm's own memory, off the program's heap, so that migrating
 * a program's malloc'd memory never moves libhmm's data with it.  Every
 * object of libhmm-core is allocated and freed with these, and only these;
 * the hmmfs daemon's own objects use the C library's.
 * ------------------------------------------------------------------------ */
void *hmm__malloc(size_t n);
void *hmm__calloc(size_t n, size_t size);
void *hmm__realloc(void *p, size_t n);
/* align: a power of two up to 128 KiB. */
void *hmm__aligned_alloc(size_t align, size_t n);
void hmm__free(void *p);
/*
 * The registry of libhmm's own mappings, which migration refuses (besides
 * the allocator's, recorded by it): anonymous memory mapped and recorded
 * at once (flags: MAP_FIXED, MAP_NORESERVE; private and anonymous always),
 * unrecorded and unmapped at once; memory mapped by others (a thread's
 * stack: begin at the thread's start, end before it returns).
 */
void *hmm__own_mmap(void *addr, size_t len, int prot, int flags);
int hmm__own_munmap(void *addr, size_t len);
void hmm__own_register(const void *addr, size_t len);
void hmm__own_unregister(const void *addr);
void *hmm__own_stack_begin(void);
void hmm__own_stack_end(void *stack);
/*
 * hmm__alloc_own_ranges() - call fn(arg, s, e) for each part [s, e) of
 * [start, end) that is libhmm's own memory.  Context: fn runs under a leaf
 * lock: it must not allocate or take a lock.
 */
void hmm__alloc_own_ranges(uint64_t start, uint64_t end,
			   void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg);

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
/*
 * hmm__radix_gang() - the items with indices in [*index, end), in order, at
 * most max of them, into items[] and their indices into indices[]; *index
 * is left where the next call should continue.  One tree descent per 64
 * indices rather than one per item.  Return: the number found.
 */
size_t hmm__radix_gang(const struct hmm__radix *r, uint64_t *index, uint64_t end,
		       void **items, uint64_t *indices, size_t max);
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
 * Invariant: used_pages == reserved_pages + sum over chunks of
 *            (pages_per_chunk - nfree), and used_pages <= capacity_pages.
 * ------------------------------------------------------------------------ */
struct hmm__chunk;

struct hmm__pool {
	size_t page_size;        /* bytes per page: power of two, >= system page */
	size_t chunk_size;       /* bytes per chunk: multiple of page_size */
	uint64_t capacity_pages; /* fixed at init; a pool backed by a reservation
				  * (attach.c) changes it under lock */
	int numa_node;           /* node to bind chunks to, or -1 */

	pthread_mutex_t lock;
	uint64_t used_pages;         /* protected by lock */
	struct hmm__chunk *partial;  /* chunks with free pages; protected by lock */
	struct hmm__radix chunks;    /* chunk address >> chunk shift -> chunk; protected by lock */
	unsigned chunk_shift;
	uint64_t nchunks;            /* protected by lock */
	uint64_t nempty;             /* chunks with every page free; protected by lock */
	struct hmm__chunk *idle, *idle_tail; /* owned chunks, every page free, memory
					      * kept, oldest first; protected by lock */
	uint64_t nheld;              /* owned chunks holding memory; protected by lock */
	uint64_t reserved_pages;     /* of used_pages, held elsewhere; protected by lock */
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
/* In a fork child, for an inherited pool: unmap and free without locking
 * or checking (the parent's pages are the parent's). */
void hmm__pool_forget(struct hmm__pool *p);
/*
 * hmm__pool_alloc() - take one page.  *zeroed tells whether it is known to
 * hold zeros (fresh from the system); otherwise its contents are undefined.
 * Context: takes p->lock.
 * Return: 0 with *page set, -ENOSPC at capacity, -ENOMEM if the system has no memory.
 */
int hmm__pool_alloc(struct hmm__pool *p, void **page, bool *zeroed);
/* Context: takes p->lock. */
void hmm__pool_free(struct hmm__pool *p, void *page);
/*
 * hmm__pool_alloc_bulk() - take n pages under one acquisition of p->lock,
 * all or none; their contents are undefined (for pages about to be
 * overwritten whole).
 * Return: 0, -ENOSPC (fewer than n pages left), -ENOMEM.
 */
int hmm__pool_alloc_bulk(struct hmm__pool *p, size_t n, void **pages);
/* Give n pages back under one acquisition of p->lock. */
void hmm__pool_free_bulk(struct hmm__pool *p, void *const *pages, size_t n);
/* Pages in use now, reserved ones included. Context: takes p->lock. */
uint64_t hmm__pool_used(struct hmm__pool *p);
/*
 * Reservations: memory of this pool's capacity that lives elsewhere (an
 * hmmfs daemon's device: the anonymous memory an attached process keeps on
 * it, in its own address space).  hmm__pool_reserve() counts n more pages
 * as used, all or none; hmm__pool_unreserve() gives back n of them.
 * Context: take p->lock.  Return: 0, -ENOSPC (fewer than n pages free).
 */
int hmm__pool_reserve(struct hmm__pool *p, uint64_t n);
void hmm__pool_unreserve(struct hmm__pool *p, uint64_t n);
/*
 * The other side of a reservation (an attached device's pool in the
 * process): hmm__pool_add_capacity() lets n more pages be taken;
 * hmm__pool_trim_capacity() lowers the capacity to the pages in use plus
 * keep, if it is higher, and returns by how much.  Context: take p->lock.
 */
void hmm__pool_add_capacity(struct hmm__pool *p, uint64_t n);
uint64_t hmm__pool_trim_capacity(struct hmm__pool *p, uint64_t keep);
/* The capacity now, in pages.  Context: takes p->lock. */
uint64_t hmm__pool_capacity(struct hmm__pool *p);
/*
 * Owned memory (see pool.c): pages that belong to one object, carved from a
 * memfd of the object's own that can be handed to another process.
 *
 * hmm__pool_alloc_owned() - n pages of the owner *owner, which is made on
 * first use (*owner NULL), all or none, populated, contents undefined.
 * Free them with hmm__pool_free/_free_bulk as any page.
 * Context: takes p->lock; the caller serialises calls for one owner.
 * Return: 0, -ENOSPC, -ENOMEM, or the memfd's errors (-EMFILE ...).
 */
struct hmm__pool_owner;
int hmm__pool_alloc_owned(struct hmm__pool *p, struct hmm__pool_owner **owner, size_t n,
			  void **pages);
/* The owner's memfd: the pool keeps it; dup it to hand it out. */
int hmm__pool_owner_fd(const struct hmm__pool_owner *o);
/* Where an owned page lies in its owner's memfd.  Return: 0, -ENOENT (not
 * an owned page).  Context: takes p->lock. */
int hmm__pool_page_offset(struct hmm__pool *p, const void *page, uint64_t *offset);
/* Punch out, unmap and close an owner's memory (other processes' mappings
 * of it then read zeros).  Every one of its pages must be free.  NULL: nothing. */
void hmm__pool_owner_destroy(struct hmm__pool *p, struct hmm__pool_owner *o);

/* ------------------------------------------------------------------------
 * dma.c - DMA engines: copy threads, each with a queue, that model a
 * device's copy engines and, optionally, the interconnect's bandwidth and
 * latency.  Copies complete asynchronously; a fence tracks a batch and is
 * waited on.
 *
 * A batch submitted to a struct hmm__dma is spread over its engines in
 * contiguous shares so that N engines copy a large batch about N times as
 * fast as one; each engine serves its queue in order.  A small batch
 * (1 MiB or less) on unthrottled engines is copied by the submitting thread
 * before hmm__dma_submit returns and counted as an engine's work: waking an
 * engine thread would cost far more than the copy.
 *
 * Throttling, per engine: each engine's share of a submission is one
 * transfer, which occupies the engine for at least latency_ns + n * 1e9 / bw
 * nanoseconds for its n bytes (bw == 0: no bandwidth limit, latency_ns == 0:
 * none), measured from when the engine starts it; an engine never sleeps for
 * time it has already spent copying.  So with bw set, one engine's achieved
 * bandwidth on large transfers is bw, not bw plus memcpy.
 * ------------------------------------------------------------------------ */
struct hmm__dma;

struct hmm__dma_copy {
	void *dst;
	const void *src;
	size_t len;
};

/*
 * A fence: counts the pieces of a batch still to copy.  Caller-allocated;
 * one fence may cover several submissions (hmm__dma_submit adds to it).
 */
struct hmm__fence {
	pthread_mutex_t lock;
	pthread_cond_t done;
	uint64_t pending; /* protected by lock */
};

void hmm__fence_init(struct hmm__fence *f);
/* Block until every copy submitted against f is complete. Context: may sleep. */
void hmm__fence_wait(struct hmm__fence *f);
/* True if every copy submitted against f is complete (does not block). */
bool hmm__fence_done(struct hmm__fence *f);
/* Context: the fence must be complete (pending == 0). */
void hmm__fence_destroy(struct hmm__fence *f);

/*
 * hmm__dma_create() - start nengines copy threads.
 * @bw: bytes per second per engine, 0 for unthrottled.
 * @latency_ns: added to every copy, 0 for none.
 * @numa_node: node to run the engine threads on, or -1.
 * Return: 0, -EINVAL (nengines == 0 or > 64), -ENOMEM, -EAGAIN (no threads).
 */
int hmm__dma_create(unsigned nengines, uint64_t bw, uint64_t latency_ns,
		    int numa_node, struct hmm__dma **out);
/* Wait for all queued copies, stop the threads, free. */
void hmm__dma_destroy(struct hmm__dma *dma);
/* In a fork child, for inherited engines (their threads are the parent's):
 * free without locking or joining. */
void hmm__dma_forget(struct hmm__dma *dma);
/*
 * hmm__dma_submit() - queue n copies (none may overlap another's dst) and
 * account them to fence f, which must have been initialised.  Returns at
 * once; the copies run on the engines.
 * Return: 0, -ENOMEM (nothing was queued).
 */
int hmm__dma_submit(struct hmm__dma *dma, const struct hmm__dma_copy *copies,
		    size_t n, struct hmm__fence *f);
/* Copy synchronously through the engines: submit and wait. */
int hmm__dma_copy_sync(struct hmm__dma *dma, const struct hmm__dma_copy *copies, size_t n);

struct hmm__dma_stats {
	uint64_t copies;   /* copy descriptors completed */
	uint64_t bytes;    /* bytes copied */
	uint64_t busy_ns;  /* sum over engines of time spent on copies, throttling included */
};
void hmm__dma_stats(struct hmm__dma *dma, struct hmm__dma_stats *st);
unsigned hmm__dma_engines(const struct hmm__dma *dma);

/* ------------------------------------------------------------------------
 * device.c - a simulated device: a memory pool of fixed capacity in pages of
 * the migration granularity, DMA engines, a type and counters.
 *
 * A private device's memory cannot be touched by the CPU: a CPU access
 * migrates the page back to host RAM.  A coherent device's memory can be
 * read and written by the CPU in place.
 * ------------------------------------------------------------------------ */
enum hmm__device_type {
	HMM__DEVICE_PRIVATE,
	HMM__DEVICE_COHERENT,
};

struct hmm__device_config {
	enum hmm__device_type type;
	uint64_t capacity;    /* bytes; rounded down to pages */
	size_t page_size;
	int numa_node;        /* -1: no placement */
	unsigned dma_engines; /* >= 1 */
	uint64_t dma_bw;      /* bytes per second per engine, 0 = unthrottled */
	uint64_t dma_latency_ns;
};

/* Counters; updated with atomic adds, read without locks. */
struct hmm__device_counters {
	uint64_t pages_in, bytes_in;    /* migrated to the device */
	uint64_t pages_out, bytes_out;  /* migrated away from it */
	uint64_t cpu_faults;            /* CPU accesses served by migrating back */
	uint64_t evictions;             /* pages evicted to make room */
};

struct hmm__page;

struct hmm__device {
	unsigned index;
	enum hmm__device_type type;
	int numa_node;
	struct hmm__device_config config;
	struct hmm__pool pool;
	struct hmm__dma *dma;
	struct hmm__device_counters counters;

	/*
	 * The pages resident on the device, least recently used first: a page
	 * joins at the tail when it arrives and when the CPU uses it in place.
	 * Invariant: a page is on this list iff its loc is this device.
	 */
	pthread_mutex_t lru_lock;
	struct hmm__page *lru_head, *lru_tail; /* protected by lru_lock */
	uint64_t lru_count;                    /* protected by lru_lock */
};

/*
 * hmm__device_create() - set up device index from cfg.
 * Return: 0, -EINVAL (bad page size or engine count), -ENOMEM, -EAGAIN.
 */
int hmm__device_create(unsigned index, const struct hmm__device_config *cfg,
		       struct hmm__device **out);
/* Context: every page of the device must have been freed. */
void hmm__device_destroy(struct hmm__device *dev);
/* hmm__device_destroy for a device a fork child inherited. */
void hmm__device_forget(struct hmm__device *dev);

/*
 * hmm__self_pid() - this process's pid, kept across fork() by a handler
 * (cheaper than getpid(), a system call).  An object that records another
 * pid was inherited from a fork's parent: its threads are not in this
 * process and its locks may be held for ever by threads that are not
 * either, so a child only forgets it (libhmm(3), "Threads").
 */
pid_t hmm__self_pid(void);
const char *hmm__device_type_name(enum hmm__device_type type);

/* Is node a NUMA node of this machine?  Without NUMA support only node 0 is. */
bool hmm__numa_node_exists(int node);

/* ------------------------------------------------------------------------
 * residency.c - where a page lives, and moving pages between locations.
 *
 * A set of locations (struct hmm__mem) is host RAM plus zero or more
 * devices.  A page (struct hmm__page) has its memory in exactly one of them.
 * The owner of a page (an hmmfs file, a mirrored range) serialises every
 * change to it with its own lock; these functions take only pool locks and
 * wait for DMA fences.
 * ------------------------------------------------------------------------ */
#define HMM__LOC_HOST (-1)

struct hmm__mem {
	struct hmm__pool *host;
	struct hmm__device **devices;
	unsigned ndevices;
	size_t page_size;
	/*
	 * Optional: where a page's owner keeps its share of device loc's
	 * memory (pool.c, owned memory), so that its pages there can be
	 * handed to other processes.  NULL, or NULL returned: the device's
	 * anonymous memory.  Called under the owner's lock.
	 */
	struct hmm__pool_owner **(*owned)(void *owner, int loc);
};

/* What a page is doing; the owner's lock protects it. */
enum hmm__page_state {
	HMM__PAGE_STABLE,       /* at loc, usable */
	HMM__PAGE_MOVING,       /* being moved to dest: data still at loc */
};

struct hmm__page {
	void *data;      /* page_size bytes at loc */
	int16_t loc;     /* HMM__LOC_HOST or a device index */
	int16_t dest;    /* while MOVING: where to */
	uint8_t state;   /* enum hmm__page_state */
	/* hmmfs, for a page on a device: the kernel's page cache may hold a
	 * copy (hmmfs/pages.c); the owner's lock protects it. */
	bool cpu_copy;
	/* hmmfs: handed to a session in place since the sessions last
	 * dropped their mappings of it; atomic (set under the owner's lock
	 * for reading). */
	bool in_place;
	void *owner;     /* whoever indexes the page (an hmmfs inode); immutable */
	uint64_t index;  /* its index there; immutable */
	struct hmm__page *lru_prev, *lru_next; /* on the device's LRU; its lru_lock */
};

/* The pool of a location.  Context: loc is HMM__LOC_HOST or < m->ndevices. */
struct hmm__pool *hmm__mem_pool(const struct hmm__mem *m, int loc);
/*
 * hmm__page_new() - a page in host RAM.  Its contents are zero unless
 * overwrite is true (the caller is about to write all of it).
 * Return: 0, -ENOSPC (host RAM full), -ENOMEM.
 */
int hmm__page_new(const struct hmm__mem *m, bool overwrite, void *owner, uint64_t index,
		  struct hmm__page **out);
/* The CPU used a page in place on a coherent device: it becomes the most
 * recently used.  Context: takes the device's lru_lock. */
void hmm__page_touch(const struct hmm__mem *m, struct hmm__page *pg);
/*
 * hmm__device_lru_oldest() - up to max pages of the device, oldest first,
 * all with the same owner as the oldest; each is moved to the tail so that a
 * page that cannot be evicted now is not picked again at once.  hold(owner)
 * is called under the lock: a page on the list proves its owner still
 * exists, so that is where the caller must take its reference.
 * Context: takes dev->lru_lock; the pages may move or be freed as soon as it
 * is dropped, so the caller revalidates them (by owner and index) under the
 * owner's lock.  Return: the number of pages in indices.
 */
size_t hmm__device_lru_oldest(struct hmm__device *dev, void (*hold)(void *owner),
			      void **owner, uint64_t *indices, size_t max);
/* Free a page and its memory, wherever it lives. */
void hmm__page_free(const struct hmm__mem *m, struct hmm__page *pg);
/*
 * hmm__pages_move() - move n pages to dest, wherever each is (in any order
 * in the array): allocate at dest, copy with the source's engines (the
 * destination's for pages in host RAM), free the old memory, update loc,
 * and count the move in the devices' pages_in/out and bytes_in/out.  One
 * DMA submission per source; a source's pages are finished while the next
 * source's copy.  All or nothing: if dest has no room for all n, or memory
 * runs out, nothing moves.
 * Context: the owner's lock is held, or the pages are MOVING and nobody else
 * touches their data.
 * Return: 0, -ENOSPC (dest full), -ENOMEM.
 */
int hmm__pages_move(const struct hmm__mem *m, struct hmm__page **pages, size_t n, int dest);

/* ------------------------------------------------------------------------
 * The session protocol between an hmmfs daemon (hmmfs/session.c) and an
 * attached process (client.c), over a SOCK_SEQPACKET unix socket: one
 * struct hmm__msg per packet.
 *
 *   client -> daemon  HELLO    token: the attach token, first message
 *   daemon -> client  WELCOME  status (0 or -errno); arg[0] page size,
 *                              arg[1] devices
 *   client -> daemon  GRANT    seq, token: a grant token
 *   daemon -> client  GRANTED  seq, status; arg[0] grant id, arg[1] device,
 *                              arg[2] writable; the memfd as SCM_RIGHTS
 *                              when status is 0
 *   daemon -> client  INVAL    seq; arg[0] grant id, arg[1] first page,
 *                              arg[2] last page (inclusive): drop every
 *                              device mapping of those pages, then answer
 *   client -> daemon  ACK      seq: every INVAL up to seq is done
 *   client -> daemon  RESERVE  seq; arg[0] device, arg[1] pages: count them
 *                              as the session's (anonymous memory the
 *                              process keeps on the device)
 *   daemon -> client  RESERVED seq, status (0, -ENOSPC, -EINVAL)
 *   client -> daemon  UNRESERVE arg[0] device, arg[1] pages: give back (no
 *                              answer; more than the session holds ends it)
 * INVALs come numbered in order and may arrive at any time, between a
 * request and its answer too.  A session's reservations end with it.
 * ------------------------------------------------------------------------ */
enum hmm__msg_type {
	HMM__MSG_HELLO = 1,
	HMM__MSG_WELCOME,
	HMM__MSG_GRANT,
	HMM__MSG_GRANTED,
	HMM__MSG_INVAL,
	HMM__MSG_ACK,
	HMM__MSG_RESERVE,
	HMM__MSG_RESERVED,
	HMM__MSG_UNRESERVE,
};

struct hmm__msg {
	uint32_t type;
	int32_t status;
	uint64_t seq;
	uint64_t token[HMM_TOKEN_WORDS];
	uint64_t arg[3];
};

/* Send one message, with descriptor fd as SCM_RIGHTS if fd >= 0; both ends
 * (client.c, hmmfs/session.c) use these.  Return: 0, -errno, -EIO (short). */
int hmm__msg_send(int sock, const struct hmm__msg *msg, int fd);
/* Receive one message and the descriptor that came with it (*fd, else -1,
 * close-on-exec).  Return: 0, -errno, -ECONNRESET (closed), -EPROTO (not
 * one whole message; no descriptor kept). */
int hmm__msg_recv(int sock, struct hmm__msg *msg, int *fd);

/* ------------------------------------------------------------------------
 * client.c - a session with an hmmfs daemon's device (the other side of
 * the protocol above).
 * ------------------------------------------------------------------------ */
struct hmm__client;
/*
 * The daemon takes pages [first, last] of the memory of grant away: drop
 * every mapping of them, then return (the daemon waits for it, up to 5 s,
 * then ends the session).  Runs on the client's invalidator thread, one
 * invalidation at a time, in order: it must not make requests of the same
 * client.
 */
typedef void (*hmm__client_inval_fn)(void *arg, uint64_t grant, uint64_t first,
				     uint64_t last);
/*
 * hmm__client_attach() - attach to device index of the mount that path (a
 * file or directory) is on; inval (may be NULL) hears the invalidations.
 * Return: 0; -ENOTTY (not hmmfs), -ENODEV, -EACCES (refused: attach=, or
 * the token's checks), -EINVAL, -EPROTO, or another -errno.
 */
int hmm__client_attach(const char *path, unsigned index, hmm__client_inval_fn inval,
		       void *arg, struct hmm__client **out);
/*
 * hmm__client_grant() - the memory of the open hmmfs file fd on the
 * attached device: *memfd, read-only unless the file is open for writing
 * (*writable, if not NULL), and the grant's id (*grant, if not NULL) that
 * invalidations name.  The caller owns *memfd.  An observer's session
 * (index HMM_ATTACH_OBSERVE) gets no memory: memfd may be NULL.
 * Return: 0; -ENOTTY, -EACCES, -EPROTO, or another -errno.
 */
int hmm__client_grant(struct hmm__client *c, int fd, int *memfd, bool *writable,
		      uint64_t *grant);
/*
 * hmm__client_reserve() - count n more pages of the attached device's
 * memory as this session's; hmm__client_unreserve() gives n back (sent,
 * not answered).  Context: no requirement on locks: the answer never waits
 * for an invalidation callback.
 * Return: 0; -ENOSPC (the device has fewer free pages), -EINVAL (an
 * observer, or n is 0), -ECONNRESET, -EPROTO, or another -errno.
 */
int hmm__client_reserve(struct hmm__client *c, uint64_t n);
int hmm__client_unreserve(struct hmm__client *c, uint64_t n);
size_t hmm__client_page_size(const struct hmm__client *c);
/* End the session; grants' descriptors stay valid.  NULL: nothing. */
void hmm__client_detach(struct hmm__client *c);
/* In a child of fork(): drop the parent's client without touching the
 * session (its socket is shared with the parent). */
void hmm__client_forget(struct hmm__client *c);
/* Whether the session is still open (the daemon may have gone). */
bool hmm__client_alive(struct hmm__client *c);

/* ------------------------------------------------------------------------
 * attach.c - devices of an hmmfs mount (see the top of attach.c).
 * ------------------------------------------------------------------------ */
struct hmm__attached;
/* A mapping, as range.c sees it, for hmm__attached_lookup. */
struct hmm__attached_vma {
	uint64_t start, end;   /* the mapping */
	uint64_t pgoff;        /* the file offset at start, bytes */
	uint32_t dev_major, dev_minor;
	uint64_t ino;
	bool write;            /* a writable shared mapping */
	const char *name;      /* the file's path as /proc/self/maps shows it */
};
/* Is any device attached?  Cheap: an atomic load. */
bool hmm__attached_any(void);
/*
 * hmm__attached_lookup() - for the n pages from addr of the shared file
 * mapping v: out[k] = HMM_PFN_VALID | its device memory (| HMM_PFN_WRITE)
 * if page k lies on the attached device owner, else 0.  owner: a range's
 * dev_private_owner; anything but an attached device gives zeros.
 * Context: no libhmm lock held (it opens files and asks the daemon).
 * Return: 0, -errno (the daemon could not be asked).
 */
int hmm__attached_lookup(const void *owner, const struct hmm__attached_vma *v, uint64_t addr,
			 size_t n, uint64_t *out);
/*
 * hmm__observe() - the mapping v (of a file, shared or not) is used by a
 * mirror: if its file is on an hmmfs mount, make sure this process hears of
 * the daemon's changes to it (see "Observers" in attach.c).
 * Context: no libhmm lock held (the first time it talks to the daemon).
 */
void hmm__observe(const struct hmm__attached_vma *v);
/* The daemon's counters of the attached device.  Return: 0, -errno. */
int hmm__attached_stats(struct hmm__attached *a, unsigned index, struct hmm_device_stats *st);
/* End the session and unmap the memory.  Context: no mirror of the device left. */
void hmm__attached_detach(struct hmm__attached *a);
/*
 * The attached device's anonymous memory lives in its pool in this process
 * (dev->core), which may hold only what the daemon reserved for the
 * session (see "Anonymous memory" in attach.c).  hmm__attached_reserve()
 * makes room for n more pages; hmm__attached_trim() gives back what the
 * pool no longer needs.  Context: any locks (the answer never waits for an
 * invalidation).  Return: 0, -ENOSPC (the device is full), -errno.
 */
int hmm__attached_reserve(struct hmm__attached *a, struct hmm__pool *pool, uint64_t n);
void hmm__attached_trim(struct hmm__attached *a, struct hmm__pool *pool);

/* Parse "123", "4K", "16M", "2G", "1T" (powers of 1024). Return: 0 or -EINVAL/-ERANGE. */
int hmm__parse_size(const char *s, uint64_t *out);

/* ------------------------------------------------------------------------
 * notifier.c - interval notifiers on this process's address space.
 *
 * Whatever changes the address space (the interposed libc calls, the
 * userfaultfd event thread, migration) brackets the change with these two:
 * hmm__invalidate_start calls the invalidate callback of every subscription
 * overlapping r, and returns when all have returned; until the matching
 * hmm__invalidate_end, read_begin on those subscriptions waits.  Calls may
 * nest and run concurrently from several threads.
 * Context: may sleep (the callbacks do); no libhmm lock held.
 * ------------------------------------------------------------------------ */
void hmm__invalidate_start(const struct hmm_notifier_range *r);
void hmm__invalidate_end(const struct hmm_notifier_range *r);
/* Does sub's range contain [start, end)? */
bool hmm__interval_covers(const struct hmm_interval_notifier *sub, uint64_t start, uint64_t end);

/* ------------------------------------------------------------------------
 * range.c - hmm_range_fault (public).  For tests: make it use the code that
 * older kernels run, bit 0 without PROCMAP_QUERY (parse /proc/self/maps),
 * bit 1 without PAGEMAP_SCAN (read /proc/self/pagemap); 0 restores.
 * ------------------------------------------------------------------------ */
void hmm__range_force_fallback(unsigned mask);

/* What hmm__snapshot tells about a page. */
#define HMM__SNAP_MAPPED  0x01 /* inside a mapping */
#define HMM__SNAP_READ    0x02 /* the mapping is readable */
#define HMM__SNAP_WRITE   0x04 /* the mapping is writable */
#define HMM__SNAP_ANON    0x08 /* private anonymous memory in base pages, not libhmm's */
#define HMM__SNAP_PRESENT 0x10 /* a CPU page is mapped */
#define HMM__SNAP_ZERO    0x20 /* it is the shared zero page */
#define HMM__SNAP_EXCL    0x40 /* mapped by this process only */
#define HMM__SNAP_SWAP    0x80 /* swapped out */
/*
 * hmm__snapshot() - one byte of HMM__SNAP_* flags for each of the n pages
 * from start (page aligned), from /proc/self/maps and pagemap, unlocked:
 * stale as soon as it returns.  Return: 0, -ENOMEM, -errno.
 */
int hmm__snapshot(uint64_t start, size_t n, uint8_t *out);

/* ------------------------------------------------------------------------
 * migrate.c - anonymous memory on devices (the public hmm_migrate_vma_*).
 * ------------------------------------------------------------------------ */
/*
 * hmm__anon_lookup() - for hmm_range_fault, before it trusts the CPU page
 * table: if the page is on the device owner, *out is its output word
 * (VALID, the device memory's frame; the caller adds WRITE); if it is being
 * migrated (even with its CPU page still there), wait for that to end.  Return: 1 (*out set), 0 (not on that device: absent),
 * -EBUSY (a migration ended meanwhile: look again).
 */
int hmm__anon_lookup(const void *owner, uint64_t va, uint64_t *out);
/* Is any page in migrate.c's table (a lockless hint)? */
bool hmm__anon_any(void);
/*
 * hmm__anon_cpu_fault() - the CPU faulted on page va of a registered range
 * (wp: a write to a write-protected page; else a missing page).  Brings
 * the page back, fills a hole or lifts the protection.
 * Context: the cpufault monitor only.
 * Return: 0 (resolved; the faulting thread is woken), -EAGAIN (the page is
 * being migrated: try again after hmm__cpufault_kick).
 */
int hmm__anon_cpu_fault(uint64_t va, bool wp);
/*
 * hmm__anon_evict() - bring every device page of anonymous memory in
 * [start, end) back to host RAM (before fork() and mremap(), which would
 * lose them).  Context: no libhmm lock held.
 */
void hmm__anon_evict(uint64_t start, uint64_t end);
/* Bring back every page of dev (before it is destroyed). */
void hmm__anon_evict_device(const void *dev);
/* Free device pages whose range an invalidation took (from hmm__invalidate_end). */
void hmm__anon_reap(void);
/*
 * hmm__anon_make_exclusive() - give owner exclusive access to the pages of
 * [start, end) (page aligned): their data moves to host pages only owner
 * maps, and a CPU access faults and puts it back (HMM_NOTIFY_EXCLUSIVE).
 * If add is not NULL, its atomic is done on its page as the page is taken
 * (add->done), or the page was not taken (then try again).
 * Context: no libhmm lock held.
 * Return: 0; -EFAULT (a page that is not private anonymous writable memory
 * used by this process alone, or unmapped meanwhile); -EBUSY (a page is
 * being migrated, on a device, or exclusive to another device); -ENOMEM;
 * -EOPNOTSUPP.
 */
/* A device atomic to do on a page hmm__anon_make_exclusive takes, at the
 * moment it takes it: add v to the aligned word at va; old, done are out. */
struct hmm__exclusive_add {
	uint64_t va, v, old;
	bool done;
};
int hmm__anon_make_exclusive(struct hmm_device *owner, uint64_t start, uint64_t end,
			     struct hmm__exclusive_add *add);
/* The host page holding va's data while it is exclusive to owner, or NULL. */
void *hmm__anon_exclusive_mem(const void *owner, uint64_t va);


/* ------------------------------------------------------------------------
 * cpufault.c - the userfaultfd that serves CPU faults on anonymous memory
 * moved to a device (see the top of cpufault.c).  All but start need it
 * started.  The ioctls return 0 or -errno.
 * ------------------------------------------------------------------------ */
/* Start the monitor (idempotent).  Return: 0, -EOPNOTSUPP (no usable
 * userfaultfd), -EMFILE, -ENOMEM, -EAGAIN. */
int hmm__cpufault_start(void);
/* A migration ended: faults kept for later are tried again. */
void hmm__cpufault_kick(void);
/* Register [start, end) for missing and write-protect faults. */
int hmm__cpufault_register(uint64_t start, uint64_t end);
/* Write-protect [start, end), or lift the protection (which wakes waiters). */
int hmm__cpufault_protect(uint64_t start, uint64_t end, bool wp);
/* Place len bytes from src at va, a missing page (optionally
 * write-protected), and wake whoever waits for it unless !wake; -EEXIST if
 * a page is there. */
int hmm__cpufault_fill(uint64_t va, const void *src, size_t len, bool wp, bool wake);
/* Wake the threads waiting on [start, end). */
int hmm__cpufault_wake(uint64_t start, uint64_t end);
/* Were the event source's events granted (started, and the kernel has them)? */
bool hmm__cpufault_events(void);
/* Is the calling thread the fault server? */
bool hmm__cpufault_on_server(void);
/* Register [start, end), one mapping, for events only (write-protect mode,
 * nothing protected).  Return: 0, -EOPNOTSUPP (no events), -EINVAL (not
 * memory the kernel can watch), -EBUSY (another userfaultfd has it). */
int hmm__cpufault_watch(uint64_t start, uint64_t end);
/* Return when every message read so far has been handed on. */
void hmm__cpufault_read_barrier(void);
/*
 * hmm__cpufault_own_begin() - announce a change of [start, end) that libhmm
 * makes and brackets itself (migrate.c's zaps, invalidate.c's wrappers):
 * the events it raises are dropped.  Hold it across the system call only.
 * Return: a slot for hmm__cpufault_own_end, or -1 (no events, or no free
 * slot: the event is then delivered, and invalidates a second time).
 */
int hmm__cpufault_own_begin(uint64_t start, uint64_t end);
void hmm__cpufault_own_end(int slot);

/* ------------------------------------------------------------------------
 * uffd.c - the userfaultfd event source (see the top of uffd.c).  In
 * libhmm.so only: it fills hmm__uffd_source when the library is loaded;
 * in libhmm-core alone (the hmmfs daemon) the pointer stays NULL and no
 * event is asked for.
 * ------------------------------------------------------------------------ */
struct hmm__uffd_source {
	uint64_t features; /* UFFD_FEATURE_* to ask for, where the kernel has them */
	uint64_t required; /* those without which no event is asked for at all */
	/* Start the dispatcher.  Context: cpufault start, before the reader runs. */
	int (*start)(void);
	/* An event (UFFD_EVENT_*) over [start, end).  Context: the reader; must
	 * not wait for anything but a leaf lock. */
	void (*event)(uint8_t kind, uint64_t start, uint64_t end);
	/* An UNMAP or REMAP event, libhmm's own changes included (which
	 * event() does not see): mappings went, and what watch() registered
	 * may be gone with them.  Context: the reader; a leaf lock only. */
	void (*unmapped)(void);
	/* range.c: a range fault walks [start, end), a private anonymous
	 * mapping: have its changes reported from now on. */
	void (*watch)(uint64_t start, uint64_t end);
	/* Wait until the invalidation of every event read so far has ended.
	 * Context: no lock an invalidate callback takes; not in a callback. */
	void (*sync)(void);
	/* Is page va in a change read but not yet invalidated?  The fault
	 * server keeps such a fault until hmm__cpufault_kick.  Context: the
	 * server; takes a leaf lock only. */
	bool (*pending)(uint64_t va);
};
extern const struct hmm__uffd_source *hmm__uffd_source;

/* The event source's wait (see struct hmm__uffd_source); nothing without it. */
static inline void hmm__uffd_sync(void)
{
	const struct hmm__uffd_source *s = __atomic_load_n(&hmm__uffd_source, __ATOMIC_ACQUIRE);

	if (s)
		s->sync();
}

#endif /* HMM_INTERNAL_H */
