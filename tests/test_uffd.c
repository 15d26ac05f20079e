/* SPDX-License-Identifier: MIT */
/*
 * test_uffd.c - the userfaultfd event source (libhmm/uffd.c), through the
 * real libhmm.so: changes that bypass libc's entry points (raw system
 * calls, glibc's own munmap in free(), mremap in realloc(), brk in heap
 * trimming) invalidate the
 * notifiers with the right event and range, and a device mirroring the
 * memory never reads the old data afterwards: it gets the new contents or
 * -EFAULT.  Migrated memory and watched memory live on one userfaultfd;
 * a raw munmap racing a device read neither crashes nor tears.
 *
 * Each check reads through the mirror before it looks at what the
 * notifier saw: a device access waits for the invalidations of system
 * calls that returned before it (the events arrive late, see uffd.c).
 * With HMM_NO_UFFD_EVENTS=1 in the environment the source is off and
 * these tests fail (or crash, reading unmapped memory).
 */
#define _GNU_SOURCE
#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL
#define USER_TOP (1ULL << 47)
#define MAXREC 256

/*
 * glibc's own allocator, whatever a sanitizer puts in front of malloc:
 * AddressSanitizer's never unmaps on free nor uses mremap, and these tests
 * are about what glibc's does behind libhmm's back.
 */
extern void *__libc_malloc(size_t len);
extern void *__libc_realloc(void *p, size_t len);
extern void __libc_free(void *p);
extern int __libc_mallopt(int param, int value);

static struct hmm_device *dev;
static struct hmm_mirror *mir;

/* A subscriber over the whole address space that records what it is told. */
static struct {
	pthread_mutex_t lock;
	unsigned calls;
	struct hmm_notifier_range seen[MAXREC];
	bool slow_clear; /* take 100 ms over each HMM_NOTIFY_CLEAR, as a slow driver */
} rec = { .lock = PTHREAD_MUTEX_INITIALIZER };
static struct hmm_interval_notifier *rec_sub;

static bool rec_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			   uint64_t cur_seq)
{
	pthread_mutex_lock(&rec.lock);
	hmm_interval_set_seq(sub, cur_seq);
	if (r->event != HMM_NOTIFY_MIGRATE && rec.calls < MAXREC)
		rec.seen[rec.calls++] = *r;
	pthread_mutex_unlock(&rec.lock);
	/* Not to let another thread run: a late invalidation that takes its
	 * time must still come before anyone uses the old pages. */
	if (r->event == HMM_NOTIFY_CLEAR && __atomic_load_n(&rec.slow_clear, __ATOMIC_RELAXED))
		usleep(100000);
	return true;
}

static const struct hmm_interval_notifier_ops rec_ops = { .invalidate = rec_invalidate };

static void setup(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 64 << 20, .numa_node = -1, .compute_units = 1 };
	void *pg;

	/* "Large" blocks stay mmap'd, whatever glibc learnt from earlier frees. */
	__libc_mallopt(M_MMAP_THRESHOLD, 128 << 10);
	cr_assert_eq(hmm_device_create(&cfg, &dev), 0);
	cr_assert_eq(hmm_mirror_create(dev, &mir), 0);
	/* Migration's own subscription first, so that ours, inserted later,
	 * is called before it (a slow driver delays freeing device pages). */
	pg = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(pg, MAP_FAILED);
	cr_assert_eq(hmm_migrate_to_device(dev, pg, PS, NULL), 0);
	munmap(pg, PS);
	cr_assert_eq(hmm_interval_notifier_insert(0, USER_TOP, &rec_ops, NULL, &rec_sub), 0);
}

static void teardown(void)
{
	hmm_interval_notifier_remove(rec_sub);
	hmm_mirror_destroy(mir);
	hmm_device_destroy(dev);
}

TestSuite(uffd, .init = setup, .fini = teardown, .timeout = 120);

static uint64_t u(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static void forget(void)
{
	pthread_mutex_lock(&rec.lock);
	rec.calls = 0;
	pthread_mutex_unlock(&rec.lock);
}

/* How many invalidations of kind event were exactly [start, end)? */
static unsigned told(uint64_t start, uint64_t end, enum hmm_notify_event event)
{
	unsigned n = 0;

	pthread_mutex_lock(&rec.lock);
	for (unsigned i = 0; i < rec.calls; i++)
		if (rec.seen[i].event == event && rec.seen[i].start == start &&
		    rec.seen[i].end == end)
			n++;
	pthread_mutex_unlock(&rec.lock);
	return n;
}

/* Was [start, end) inside an invalidation of kind event? */
static bool told_covering(uint64_t start, uint64_t end, enum hmm_notify_event event)
{
	bool found = false;

	pthread_mutex_lock(&rec.lock);
	for (unsigned i = 0; i < rec.calls; i++)
		found |= rec.seen[i].event == event && rec.seen[i].start <= start &&
			 end <= rec.seen[i].end;
	pthread_mutex_unlock(&rec.lock);
	return found;
}

static unsigned char *map_anon(size_t n, unsigned char byte)
{
	unsigned char *p = mmap(NULL, n * PS, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, byte, n * PS);
	return p;
}

/* The device reads [p, p + len): every byte must be byte. */
static void device_sees(const void *p, size_t len, unsigned char byte, const char *what)
{
	unsigned char *buf = malloc(len);
	int rc;

	cr_assert(buf);
	rc = hmm_mirror_read(mir, u(p), buf, len);
	cr_assert_eq(rc, 0, "%s: hmm_mirror_read: %s", what, strerror(-rc));
	for (size_t i = 0; i < len; i++)
		if (buf[i] != byte)
			cr_assert_fail("%s: byte %zu is 0x%02x, not 0x%02x", what, i, buf[i], byte);
	free(buf);
}

/* The device reads [p, p + len) and faults: the memory is gone. */
static void device_faults(const void *p, size_t len, const char *what)
{
	unsigned char *buf = malloc(len);
	int rc;

	cr_assert(buf);
	rc = hmm_mirror_read(mir, u(p), buf, len);
	cr_assert_eq(rc, -EFAULT, "%s: hmm_mirror_read gave %d, not -EFAULT", what, rc);
	free(buf);
}

Test(uffd, a_raw_munmap_invalidates_exactly_its_pages_and_the_device_then_faults)
{
	unsigned char *p = map_anon(16, 0x5a);

	device_sees(p, 16 * PS, 0x5a, "before");
	forget();
	cr_assert_eq(syscall(SYS_munmap, p + 4 * PS, 2 * PS), 0);
	device_faults(p + 4 * PS, 2 * PS, "after the raw munmap");
	cr_assert_eq(told(u(p) + 4 * PS, u(p) + 6 * PS, HMM_NOTIFY_UNMAP), 1);
	device_sees(p, 4 * PS, 0x5a, "the pages before the hole");
	device_sees(p + 6 * PS, 10 * PS, 0x5a, "the pages after the hole");
	munmap(p, 4 * PS);
	munmap(p + 6 * PS, 10 * PS);
}

Test(uffd, free_of_a_large_malloc_block_invalidates_its_mapping)
{
	unsigned char *q = __libc_malloc(1 << 20);
	uint64_t first = u(q) & ~(PS - 1), last = (u(q) + (1 << 20)) & ~(PS - 1);

	cr_assert(q);
	memset(q, 0x33, 1 << 20);
	device_sees(q, 1 << 20, 0x33, "before");
	forget();
	/* glibc gives the block back with its own munmap, not ours. */
	__libc_free(q);
	device_faults((void *)(uintptr_t)first, PS, "after free()");
	cr_assert(told_covering(first, last, HMM_NOTIFY_UNMAP),
		  "no unmap covering the block was seen");
}

Test(uffd, realloc_moving_a_block_invalidates_the_old_range)
{
	unsigned char *q = __libc_malloc(1 << 20), *r, *blocker;
	uint64_t first = u(q) & ~(PS - 1), end = (u(q) + (1 << 20) + PS - 1) & ~(PS - 1);

	cr_assert(q);
	/* Something right after the block, so that growing it must move it. */
	blocker = mmap((void *)(uintptr_t)end, PS, PROT_READ,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	cr_assert(blocker == (void *)(uintptr_t)end || (blocker == MAP_FAILED && errno == EEXIST),
		  "the page after the block is neither free nor taken");
	memset(q, 0x44, 1 << 20);
	device_sees(q, 1 << 20, 0x44, "before");
	forget();
	r = __libc_realloc(q, 4 << 20);
	cr_assert(r);
	cr_assert_neq(r, q, "realloc grew the block in place");
	device_faults((void *)(uintptr_t)first, PS, "the old range after realloc()");
	device_sees(r, 1 << 20, 0x44, "the new range");
	cr_assert(told_covering(first, end, HMM_NOTIFY_UNMAP), "no unmap of the old range");
	__libc_free(r);
	if (blocker != MAP_FAILED)
		munmap(blocker, PS);
}

/*
 * A new mapping where a watched one was, at the very same address, raw
 * system calls only: its changes must be reported too.  uffd.c remembers
 * the mappings it registered; how the old one went decides whether the
 * reader reported it (a raw munmap, a raw mmap MAP_FIXED over it) or
 * dropped it as libhmm's own (the interposed munmap): either way the
 * new mapping is registered when the device first walks it.
 */
static void watched_again(unsigned char byte, int how)
{
	unsigned char *p = map_anon(16, byte), *q;

	device_sees(p, 16 * PS, byte, "the first mapping");
	if (how == 0) {
		cr_assert_eq(syscall(SYS_munmap, p, 16 * PS), 0);
	} else if (how == 1) {
		cr_assert_eq(munmap(p, 16 * PS), 0);
	}
	q = (unsigned char *)syscall(SYS_mmap, p, 16 * PS, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS | (how == 2 ? MAP_FIXED : MAP_FIXED_NOREPLACE),
				     -1, 0);
	cr_assert_eq(q, p, "the new mapping is not where the old one was");
	memset(q, byte + 1, 16 * PS);
	device_sees(q, 16 * PS, byte + 1, "the new mapping");
	forget();
	cr_assert_eq(syscall(SYS_munmap, q + 8 * PS, 8 * PS), 0);
	device_faults(q + 8 * PS, 8 * PS, "the new mapping, after a raw munmap");
	cr_assert_eq(told(u(q) + 8 * PS, u(q) + 16 * PS, HMM_NOTIFY_UNMAP), 1);
	device_sees(q, 8 * PS, byte + 1, "the rest of the new mapping");
	munmap(q, 8 * PS);
}

Test(uffd, a_new_mapping_where_a_watched_one_was_is_watched_too)
{
	watched_again(0x21, 0); /* the old one went by a raw munmap */
	watched_again(0x31, 1); /* by the interposed munmap (libhmm's own) */
	watched_again(0x41, 2); /* replaced by a raw mmap MAP_FIXED */
}

Test(uffd, a_raw_madvise_dontneed_clears_the_range_and_the_device_reads_zeros)
{
	unsigned char *p = map_anon(8, 0x66);

	device_sees(p, 8 * PS, 0x66, "before");
	forget();
	cr_assert_eq(syscall(SYS_madvise, p + 2 * PS, 4 * PS, MADV_DONTNEED), 0);
	device_sees(p + 2 * PS, 4 * PS, 0, "after MADV_DONTNEED");
	cr_assert_eq(told(u(p) + 2 * PS, u(p) + 6 * PS, HMM_NOTIFY_CLEAR), 1);
	device_sees(p, 2 * PS, 0x66, "the pages left alone");
	munmap(p, 8 * PS);
}

Test(uffd, a_raw_mremap_moving_a_range_invalidates_the_old_range)
{
	unsigned char *p = map_anon(8, 0x77), *target = map_anon(8, 0), *q;

	device_sees(p, 8 * PS, 0x77, "before");
	forget();
	q = (unsigned char *)syscall(SYS_mremap, p, 8 * PS, 8 * PS,
				     MREMAP_MAYMOVE | MREMAP_FIXED, target);
	cr_assert_eq(q, target);
	device_faults(p, PS, "the old range after mremap");
	device_sees(q, 8 * PS, 0x77, "the new range");
	cr_assert_eq(told(u(p), u(p) + 8 * PS, HMM_NOTIFY_UNMAP) >= 1, 1,
		     "no unmap of the old range");
	munmap(q, 8 * PS);
}

/* The device's read of a heap block, from a thread of its own: its
 * allocations (the device's page-table nodes, its bounce buffer) go to its
 * own arena, and nothing of the main heap is allocated after the block. */
static struct {
	pthread_barrier_t go, done;
	unsigned char *q;
	size_t len;
	int rc;
} heap;

static void *heap_reader(void *arg)
{
	static unsigned char buf[2 << 20];

	(void)arg;
	pthread_barrier_wait(&heap.go);
	heap.rc = hmm_mirror_read(mir, u(heap.q), buf, heap.len);
	pthread_barrier_wait(&heap.done);
	return NULL;
}

/* A block of len bytes from the main heap, filled with byte, that the
 * device has read; with *guard, another block allocated right after it. */
static unsigned char *heap_block_mirrored(size_t len, unsigned char byte, void **guard)
{
	pthread_t t;
	uint64_t top;

	cr_assert_eq(pthread_barrier_init(&heap.go, NULL, 2), 0);
	cr_assert_eq(pthread_barrier_init(&heap.done, NULL, 2), 0);
	cr_assert_eq(pthread_create(&t, NULL, heap_reader, NULL), 0);
	heap.len = len;
	heap.q = __libc_malloc(len);
	if (guard)
		*guard = __libc_malloc(256 << 10);
	memset(heap.q, byte, len);
	pthread_barrier_wait(&heap.go);
	pthread_barrier_wait(&heap.done);
	pthread_join(t, NULL);
	top = (uint64_t)syscall(SYS_brk, 0);
	cr_assert(u(heap.q) < top && u(heap.q) + len <= top, "the block is not on the heap");
	cr_assert_eq(heap.rc, 0, "the device's read before");
	if (guard)
		cr_assert_gt((uintptr_t)*guard, u(heap.q), "the guard is not after the block");
	return heap.q;
}

Test(uffd, glibc_trimming_the_heap_with_its_own_brk_invalidates_what_goes)
{
	unsigned char *q;
	uint64_t brk_after, end;

	/* free() gives a block at the heap's top back by shrinking the heap
	 * with glibc's internal brk, not ours. */
	__libc_mallopt(M_MMAP_THRESHOLD, 8 << 20);
	__libc_mallopt(M_TRIM_THRESHOLD, 128 << 10);
	__libc_mallopt(M_TOP_PAD, 0);
	q = heap_block_mirrored(2 << 20, 0x11, NULL);
	end = (u(q) + (2 << 20)) & ~(PS - 1);
	forget();
	__libc_free(q);
	brk_after = ((uint64_t)syscall(SYS_brk, 0) + PS - 1) & ~(PS - 1);
	__libc_mallopt(M_MMAP_THRESHOLD, 128 << 10);
	cr_assert_lt(brk_after, end, "glibc did not shrink the heap");
	device_faults((void *)(uintptr_t)brk_after, end - brk_after, "after the heap shrank");
	cr_assert(told_covering(brk_after, end, HMM_NOTIFY_UNMAP), "no unmap of the heap's top");
}

Test(uffd, malloc_trim_clearing_free_heap_pages_invalidates_them)
{
	static unsigned char got[64 * PS];
	unsigned char *q;
	uint64_t first, last;
	void *keep;

	/* A free block in the middle of the heap: malloc_trim() drops its
	 * pages with glibc's own MADV_DONTNEED. */
	__libc_mallopt(M_MMAP_THRESHOLD, 8 << 20);
	__libc_mallopt(M_TRIM_THRESHOLD, 64 << 20);
	q = heap_block_mirrored(1 << 20, 0x12, &keep); /* keep: q is not the top */
	/* Its last pages: allocations after the free() are carved from its
	 * start, and the next block's header is right after its end. */
	last = ((u(q) + (1 << 20)) & ~(PS - 1)) - PS;
	first = last - 64 * PS;
	forget();
	__libc_free(q);
	cr_assert_eq(malloc_trim(0), 1, "malloc_trim released nothing");
	__libc_mallopt(M_MMAP_THRESHOLD, 128 << 10);
	/* Into a buffer of its own: a malloc'd one could be carved from q. */
	cr_assert_eq(hmm_mirror_read(mir, first, got, sizeof(got)), 0);
	for (size_t i = 0; i < sizeof(got); i++)
		if (got[i])
			cr_assert_fail("free pages after malloc_trim: byte %zu is 0x%02x", i, got[i]);
	cr_assert(told_covering(first, last, HMM_NOTIFY_CLEAR), "no clear of the free pages");
	__libc_free(keep);
}

/* Fork a child that exits at once, with the raw system call (no fork
 * handlers run) or libc's fork() (libhmm's), and reap it. */
static void fork_child_that_exits(bool raw)
{
	long pid = raw ? syscall(SYS_fork) : fork();
	int status;

	if (pid == 0)
		syscall(SYS_exit_group, 0);
	cr_assert_gt(pid, 0);
	cr_assert_eq(waitpid((pid_t)pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

Test(uffd, a_raw_fork_is_a_protection_change_of_the_whole_address_space)
{
	unsigned char *p = map_anon(4, 0x22);

	device_sees(p, 4 * PS, 0x22, "before");
	forget();
	fork_child_that_exits(true);
	device_sees(p, 4 * PS, 0x22, "after the fork");
	cr_assert_eq(told(0, USER_TOP, HMM_NOTIFY_PROTECTION_PAGE), 1);
	munmap(p, 4 * PS);
}

Test(uffd, an_interposed_fork_or_munmap_invalidates_once_not_twice)
{
	unsigned char *p = map_anon(4, 0x23);

	device_sees(p, 4 * PS, 0x23, "before");
	forget();
	fork_child_that_exits(false);
	cr_assert_eq(munmap(p + PS, PS), 0);
	device_faults(p + PS, PS, "after munmap");
	device_sees(p, PS, 0x23, "after the fork");
	cr_assert_eq(told(0, USER_TOP, HMM_NOTIFY_PROTECTION_PAGE), 1);
	cr_assert_eq(told(u(p) + PS, u(p) + 2 * PS, HMM_NOTIFY_UNMAP), 1);
	munmap(p, PS);
	munmap(p + 2 * PS, 2 * PS);
}

Test(uffd, migrated_and_watched_memory_share_the_userfaultfd)
{
	unsigned char *p = map_anon(64, 0x3c);
	struct hmm_device_stats st;
	uint64_t moved;
	volatile unsigned char sum = 0;

	/* Watched first (a mirror read), then migrated, then faulted back. */
	device_sees(p, 64 * PS, 0x3c, "before");
	cr_assert_eq(hmm_migrate_to_device(dev, p, 64 * PS, &moved), 0);
	cr_assert_eq(moved, 64);
	for (size_t i = 0; i < 32; i++)
		cr_assert_eq(p[i * PS], 0x3c, "the CPU's read of page %zu", i);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.used, 32 * PS, "half came back");
	/* A raw munmap across host and device pages frees those on the device. */
	forget();
	cr_assert_eq(syscall(SYS_munmap, p + 16 * PS, 32 * PS), 0);
	device_faults(p + 16 * PS, 32 * PS, "after the raw munmap");
	cr_assert_eq(told(u(p) + 16 * PS, u(p) + 48 * PS, HMM_NOTIFY_UNMAP), 1);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.used, 16 * PS, "the device pages unmapped were freed");
	device_sees(p, 16 * PS, 0x3c, "host pages left");
	device_sees(p + 48 * PS, 16 * PS, 0x3c, "device pages left");
	for (size_t i = 48; i < 64; i++)
		cr_assert_eq(p[i * PS], 0x3c, "the CPU's read of page %zu", i);
	/* Migrated first, then watched: a raw MADV_DONTNEED clears the device
	 * pages, and neither the device nor the CPU sees the old data. */
	cr_assert_eq(hmm_migrate_to_device(dev, p + 48 * PS, 16 * PS, &moved), 0);
	cr_assert_eq(moved, 16);
	device_sees(p + 48 * PS, 16 * PS, 0x3c, "the owner reads its device pages");
	forget();
	__atomic_store_n(&rec.slow_clear, true, __ATOMIC_RELAXED);
	cr_assert_eq(syscall(SYS_madvise, p + 48 * PS, 16 * PS, MADV_DONTNEED), 0);
	/* The CPU first: its faults wait for the late (and slow) invalidation
	 * that frees the device pages, rather than bringing them back. */
	for (size_t i = 48; i < 64; i++)
		sum |= p[i * PS];
	__atomic_store_n(&rec.slow_clear, false, __ATOMIC_RELAXED);
	cr_assert_eq(sum, 0, "the CPU reads zeros");
	device_sees(p + 48 * PS, 16 * PS, 0, "after MADV_DONTNEED of device pages");
	cr_assert_eq(told(u(p) + 48 * PS, u(p) + 64 * PS, HMM_NOTIFY_CLEAR), 1);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.used, 0);
	munmap(p, 16 * PS);
	munmap(p + 48 * PS, 16 * PS);
}

/* ------------------------------------------------------------------ race */

static struct {
	pthread_barrier_t go;
	unsigned char *p;
} race;

static void *unmapper(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&race.go);
	syscall(SYS_munmap, race.p, 8 * PS);
	return NULL;
}

Test(uffd, a_raw_munmap_racing_a_device_read_gives_the_data_or_efault)
{
	unsigned char *buf = malloc(8 * PS);

	cr_assert(buf);
	cr_assert_eq(pthread_barrier_init(&race.go, NULL, 2), 0);
	for (unsigned it = 0; it < 300; it++) {
		pthread_t t;
		int rc;

		race.p = map_anon(8, (unsigned char)(it | 1));
		device_sees(race.p, 8 * PS, (unsigned char)(it | 1), "before");
		cr_assert_eq(pthread_create(&t, NULL, unmapper, NULL), 0);
		pthread_barrier_wait(&race.go);
		rc = hmm_mirror_read(mir, u(race.p), buf, 8 * PS);
		pthread_join(t, NULL);
		cr_assert(rc == 0 || rc == -EFAULT, "iteration %u: %d", it, rc);
		if (rc == 0)
			for (size_t i = 0; i < 8 * PS; i++)
				cr_assert_eq(buf[i], (unsigned char)(it | 1), "iteration %u byte %zu",
					     it, i);
		device_faults(race.p, 8 * PS, "after the race");
	}
	pthread_barrier_destroy(&race.go);
	free(buf);
}
