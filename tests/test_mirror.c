/* SPDX-License-Identifier: MIT */
/*
 * test_mirror.c - embedded devices and their mirrors, through the real
 * libhmm.so: the device reads and writes malloc'd and mmap'd memory at the
 * CPU's addresses, faults in rounds as the kernel's test driver counts
 * them, gets -EFAULT and -EPERM where the kernel gives them, loses its
 * entries to munmap, mprotect, madvise and fork before the CPU's mapping
 * changes, and never reads torn or stale data while another thread unmaps
 * and remaps what it reads.
 */
#define _GNU_SOURCE
#include <hmm.h>

#include <criterion/criterion.h>
#include <signal.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define PS 4096UL
#define NPAGES 1024 /* 4 MiB, as the kernel's hmm-tests use */

static struct hmm_device *dev;
static struct hmm_mirror *mir;

static void setup(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 64 << 20, .numa_node = -1 };

	cr_assert_eq(hmm_device_create(&cfg, &dev), 0);
	cr_assert_eq(hmm_mirror_create(dev, &mir), 0);
}

static void teardown(void)
{
	hmm_mirror_destroy(mir);
	cr_assert_eq(hmm_device_destroy(dev), 0);
}

TestSuite(mirror, .init = setup, .fini = teardown);

static struct hmm_mirror_stats stats(void)
{
	struct hmm_mirror_stats st;

	cr_assert_eq(hmm_mirror_stats(mir, &st), 0);
	return st;
}

static unsigned char *anon(size_t npages, int prot)
{
	unsigned char *p = mmap(NULL, npages * PS, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 31 + seed);
}

Test(mirror, bad_arguments_are_refused)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 1 << 20, .numa_node = -1 };
	struct hmm_device *d = NULL;
	struct hmm_mirror *m2 = NULL;
	char b[8];

	cr_assert_eq(hmm_device_create(NULL, &d), -EINVAL);
	cfg.size = 4;
	cr_assert_eq(hmm_device_create(&cfg, &d), -EINVAL, "an unknown struct size");
	cfg.size = sizeof(cfg);
	cfg.type = 7;
	cr_assert_eq(hmm_device_create(&cfg, &d), -EINVAL);
	cfg.type = HMM_DEVICE_COHERENT;
	cfg.memory = 100;
	cr_assert_eq(hmm_device_create(&cfg, &d), -EINVAL, "less than a page");
	cfg.memory = 1 << 20;
	cfg.numa_node = 4095;
	cr_assert_eq(hmm_device_create(&cfg, &d), -ENODEV);
	cr_assert_null(d);
	cr_assert_eq(hmm_mirror_create(dev, &m2), -EEXIST, "one mirror per device");
	cr_assert_eq(hmm_device_destroy(dev), -EBUSY, "a device with a mirror stays");
	cr_assert_eq(hmm_mirror_read(mir, UINT64_MAX - 2, b, 8), -EINVAL, "wraps");
	cr_assert_eq(hmm_mirror_read(mir, 0x1000, NULL, 8), -EINVAL);
	cr_assert_eq(hmm_mirror_read(NULL, 0x1000, b, 8), -EINVAL);
}

Test(mirror, device_reads_malloced_memory_in_one_fault_round_then_none)
{
	unsigned char *buf = malloc(NPAGES * PS), *out = malloc(NPAGES * PS);

	fill(buf, NPAGES * PS, 1);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)buf, out, NPAGES * PS), 0);
	cr_assert_eq(memcmp(buf, out, NPAGES * PS), 0);
	cr_assert_eq(stats().faults, 1);
	cr_assert_geq(stats().pages_faulted, NPAGES);
	memset(out, 0, NPAGES * PS);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)buf, out, NPAGES * PS), 0);
	cr_assert_eq(memcmp(buf, out, NPAGES * PS), 0);
	cr_assert_eq(stats().faults, 1, "a second read finds every page mapped");
	free(buf);
	free(out);
}

Test(mirror, device_writes_land_where_the_cpu_reads_them)
{
	unsigned char *p = anon(NPAGES, PROT_READ | PROT_WRITE), *src = malloc(NPAGES * PS);

	fill(src, NPAGES * PS, 7);
	cr_assert_eq(hmm_mirror_write(mir, (uintptr_t)p + 100, src, NPAGES * PS - 200), 0);
	cr_assert_eq(memcmp(p + 100, src, NPAGES * PS - 200), 0);
	cr_assert_eq(p[99], 0);
	cr_assert_eq(stats().faults, 1);
	free(src);
	munmap(p, NPAGES * PS);
}

Test(mirror, prot_none_and_holes_fault_with_efault_and_read_only_writes_with_eperm)
{
	unsigned char *p = anon(4, PROT_READ | PROT_WRITE), b[PS] = { 0 };

	fill(p, 4 * PS, 3);
	cr_assert_eq(mprotect(p + PS, PS, PROT_NONE), 0);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)p, b, 2 * PS), -EFAULT);
	cr_assert_eq(memcmp(b, p, PS), 0, "the bytes before the bad page were read");
	cr_assert_eq(mprotect(p + PS, PS, PROT_READ), 0);
	memset(b, 0xee, PS);
	cr_assert_eq(hmm_mirror_write(mir, (uintptr_t)p + PS, b, PS), -EPERM);
	cr_assert_neq(p[PS], 0xee, "a refused write changes nothing");
	cr_assert_eq(mprotect(p + PS, PS, PROT_READ | PROT_WRITE), 0);
	cr_assert_eq(hmm_mirror_write(mir, (uintptr_t)p + PS, b, PS), 0);
	cr_assert_eq(p[PS], 0xee, "after mprotect RW the write goes through");
	cr_assert_eq(munmap(p + 3 * PS, PS), 0);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)p + 3 * PS, b, 1), -EFAULT, "a hole");
	munmap(p, 3 * PS);
}

Test(mirror, munmap_madvise_and_mprotect_take_the_device_entries_first)
{
	unsigned char *p = anon(16, PROT_READ | PROT_WRITE), b[16 * PS];

	fill(p, 16 * PS, 5);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)p, b, 16 * PS), 0);
	cr_assert_eq(stats().mapped_pages, 16);
	cr_assert_eq(madvise(p, 4 * PS, MADV_DONTNEED), 0);
	cr_assert_eq(stats().mapped_pages, 12);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)p, b, PS), 0);
	cr_assert_eq(b[0], 0, "the device sees the page the CPU now has: zeros");
	cr_assert_eq(mprotect(p + 8 * PS, 8 * PS, PROT_READ), 0);
	cr_assert_eq(stats().mapped_pages, 5);
	cr_assert_eq(munmap(p + 4 * PS, 4 * PS), 0);
	cr_assert_eq(stats().mapped_pages, 1);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)p + 4 * PS, b, PS), -EFAULT);
	cr_assert_geq(stats().invalidations, 3);
	munmap(p, 4 * PS);
	munmap(p + 8 * PS, 8 * PS);
	cr_assert_eq(stats().mapped_pages, 0);
}

Test(mirror, after_fork_a_device_write_in_the_parent_leaves_the_child_its_copy)
{
	unsigned char *p = anon(4, PROT_READ | PROT_WRITE), b[PS];
	int pipefd[2], status;
	pid_t pid;

	fill(p, 4 * PS, 9);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)p, b, PS), 0); /* mapped writable */
	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char go;

		close(pipefd[1]);
		if (read(pipefd[0], &go, 1) != 1)
			_exit(2);
		_exit(p[0] == (unsigned char)9 ? 0 : 1);
	}
	close(pipefd[0]);
	memset(b, 0x77, PS);
	cr_assert_eq(hmm_mirror_write(mir, (uintptr_t)p, b, PS), 0);
	cr_assert_eq(p[0], 0x77);
	cr_assert_eq(write(pipefd[1], "g", 1), 1);
	close(pipefd[1]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child saw the parent's device write (status %#x)", status);
	munmap(p, 4 * PS);
}

static void add_one_kernel(struct hmm_kernel *k, void *arg)
{
	((uint64_t *)arg)[hmm_kernel_item(k)]++;
}

/*
 * The child of a fork has none of libhmm's threads, so it has no devices
 * (libhmm(3), "Threads"): the ones it inherited answer -ENODEV, and
 * destroying them only forgets them, without waiting for the parent's
 * threads.  Then it makes devices of its own.  The child reports each
 * failure by its exit status; a hang is killed after 30 s.
 */
Test(mirror, a_fork_child_forgets_inherited_devices_and_makes_its_own)
{
	uint64_t *x = (uint64_t *)anon(4, PROT_READ | PROT_WRITE), moved;
	unsigned char b[PS];
	int status = 0;
	pid_t pid, w = 0;

	skip_under_sanitizers_if_children_start_threads();
	/* Every kind of thread running: compute units, DMA engines, the CPU
	 * fault server. */
	cr_assert_eq(hmm_launch(mir, 64, add_one_kernel, x), 0);
	cr_assert_eq(hmm_migrate_to_device(dev, x, 2 * PS, &moved), 0);
	cr_assert_eq(x[0], 1);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
						 .memory = 4 << 20, .numa_node = -1 };
		struct hmm_device *d2;
		struct hmm_mirror *m2;
		struct hmm_mirror_stats st;
		void *page;

		if (hmm_mirror_read(mir, (uintptr_t)x, b, 8) != -ENODEV ||
		    hmm_mirror_stats(mir, &st) != -ENODEV ||
		    hmm_launch(mir, 1, add_one_kernel, x) != -ENODEV)
			_exit(10);
		if (hmm_migrate_to_device(dev, x, PS, &moved) != -ENODEV ||
		    hmm_device_page_alloc(dev, &page) != -ENODEV ||
		    hmm_mirror_create(dev, &m2) != -ENODEV)
			_exit(11);
		if (hmm_device_destroy(dev) != -EBUSY) /* its mirror first, as anywhere */
			_exit(12);
		hmm_mirror_destroy(mir);
		if (hmm_device_destroy(dev) != 0)
			_exit(13);
		/* Its own device: everything works. */
		if (hmm_device_create(&cfg, &d2) || hmm_mirror_create(d2, &m2))
			_exit(14);
		if (hmm_launch(m2, 64, add_one_kernel, x) || x[0] != 2 || x[63] != 2)
			_exit(15);
		if (hmm_migrate_to_device(d2, x, PS, &moved) || moved != 1 || x[1] != 2)
			_exit(16);
		hmm_mirror_destroy(m2);
		_exit(hmm_device_destroy(d2) ? 17 : 0);
	}
	for (int i = 0; i < 3000 && w == 0; i++) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == 0)
			usleep(10000);
	}
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		cr_assert_fail("the child hung");
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (status %#x)",
		  status);
	/* The parent's device and mirror go on. */
	cr_assert_eq(hmm_launch(mir, 64, add_one_kernel, x), 0);
	cr_assert_eq(x[0], 2);
	cr_assert_eq(hmm_mirror_read(mir, (uintptr_t)x, b, 8), 0);
	munmap(x, 4 * PS);
}

/* The kernel's anon_teardown: a reader against munmap/mmap of the same range. */
static struct {
	unsigned char *p;
	bool stop; /* atomic */
	unsigned long bad, ok, efault;
} td;

static void *remapper(void *arg)
{
	unsigned gen = 0;

	(void)arg;
	while (!__atomic_load_n(&td.stop, __ATOMIC_ACQUIRE)) {
		/* Replace the pages with new ones holding one byte value each. */
		unsigned char v = (unsigned char)(++gen | 1);
		unsigned char *q = mmap(td.p, 8 * PS, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

		if (q != td.p)
			abort();
		memset(q, v, 8 * PS);
		/* PROT_NONE rather than munmap, so the next MAP_FIXED never
		 * lands on something the system put in the hole. */
		if (gen % 3 == 0 && mmap(q + 4 * PS, 4 * PS, PROT_NONE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
			abort();
		usleep(gen % 32);
	}
	return NULL;
}

Test(mirror, a_reader_racing_munmap_and_mmap_fixed_reads_whole_pages_or_fails)
{
	unsigned char b[8 * PS];
	pthread_t t;

	td.p = anon(8, PROT_READ | PROT_WRITE);
	memset(td.p, 1, 8 * PS);
	pthread_create(&t, NULL, remapper, NULL);
	for (int i = 0; i < 3000; i++) {
		int err = hmm_mirror_read(mir, (uintptr_t)td.p, b, 8 * PS);

		if (err == -EFAULT) {
			td.efault++;
			continue;
		}
		cr_assert_eq(err, 0);
		td.ok++;
		/* Each page was read whole from one mapping: one value, or the
		 * zeros of a page the remapper had not filled yet. */
		for (int pg = 0; pg < 8; pg++)
			for (size_t k = 1; k < PS; k++)
				if (b[pg * PS + k] != b[pg * PS] && b[pg * PS + k] != 0 &&
				    b[pg * PS] != 0)
					td.bad++;
	}
	__atomic_store_n(&td.stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_log_info("%lu reads, %lu -EFAULT, %u invalidations", td.ok, td.efault,
		    (unsigned)stats().invalidations);
	cr_assert_eq(td.bad, 0, "%lu bytes came from another mapping than their page",
		     td.bad);
	cr_assert_gt(stats().invalidations, 10, "the remapper hardly ran");
	munmap(td.p, 8 * PS);
}

/* -- the fault buffer */

#define READERS 8
#define READER_PAGES 16

struct reader {
	pthread_barrier_t *start;
	unsigned char *mem;
	int err;
	bool ok;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	unsigned char *buf = malloc(READER_PAGES * PS);

	pthread_barrier_wait(r->start);
	r->err = hmm_mirror_read(mir, (uint64_t)(uintptr_t)r->mem, buf, READER_PAGES * PS);
	r->ok = buf && !memcmp(buf, r->mem, READER_PAGES * PS);
	free(buf);
	return NULL;
}

Test(mirror, concurrent_faults_are_served_in_batches_and_each_access_gets_its_data)
{
	unsigned char *p = anon(READERS * READER_PAGES + 1, PROT_READ | PROT_WRITE);
	struct reader r[READERS];
	pthread_t t[READERS];
	pthread_barrier_t start;
	struct hmm_mirror_stats before = stats(), after;
	unsigned char bad[8];

	fill(p, (READERS * READER_PAGES + 1) * PS, 9);
	pthread_barrier_init(&start, NULL, READERS);
	for (int i = 0; i < READERS; i++) {
		r[i] = (struct reader){ &start, p + (size_t)i * READER_PAGES * PS, -1, false };
		cr_assert_eq(pthread_create(&t[i], NULL, reader_main, &r[i]), 0);
	}
	for (int i = 0; i < READERS; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(r[i].err, 0, "reader %d: %s", i, strerror(-r[i].err));
		cr_assert(r[i].ok, "reader %d read the wrong bytes", i);
	}
	after = stats();
	cr_assert_eq(after.faults - before.faults, READERS, "one fault per access");
	cr_assert_geq(after.fault_batches - before.fault_batches, 1);
	cr_assert_leq(after.fault_batches - before.fault_batches, READERS);
	cr_log_info("%d faults in %llu batches", READERS,
		    (unsigned long long)(after.fault_batches - before.fault_batches));
	/* A bad page in a batch fails only its own access. */
	cr_assert_eq(munmap(p + READERS * READER_PAGES * PS, PS), 0);
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)(p + READERS * READER_PAGES * PS),
				     bad, sizeof(bad)), -EFAULT);
	pthread_barrier_destroy(&start);
	munmap(p, READERS * READER_PAGES * PS);
}

/*
 * -- a page-table format of the test's own, plugged in with
 * hmm_mirror_create_pt: an open-addressing hash table of 4 KiB entries (no
 * large entries), counting its calls.
 */

/* Entries installed through the format, by any table. */
static unsigned long ht_maps_total;

#define HT_EMPTY 0
#define HT_GONE 1 /* a deleted slot: keys are (va >> 12) + 2 */

struct ht {
	uint64_t *keys, *ptes;
	size_t cap, used; /* used counts live and deleted slots */
	unsigned long maps, unmaps, lookups;
};

static size_t ht_slot(const struct ht *t, uint64_t key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 20) & (t->cap - 1);
}

static int ht_create(void **pt)
{
	struct ht *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->cap = 64;
	t->keys = calloc(t->cap, sizeof(*t->keys));
	t->ptes = calloc(t->cap, sizeof(*t->ptes));
	if (!t->keys || !t->ptes) {
		free(t->keys);
		free(t->ptes);
		free(t);
		return -ENOMEM;
	}
	*pt = t;
	return 0;
}

static void ht_destroy(void *pt)
{
	struct ht *t = pt;

	free(t->keys);
	free(t->ptes);
	free(t);
}

/* The slot holding key, or (insert) the first free one on its probe path. */
static size_t ht_find(const struct ht *t, uint64_t key, bool insert)
{
	size_t i = ht_slot(t, key), free_at = SIZE_MAX;

	for (size_t n = 0; n < t->cap; n++, i = (i + 1) & (t->cap - 1)) {
		if (t->keys[i] == key)
			return i;
		if (t->keys[i] == HT_GONE && free_at == SIZE_MAX)
			free_at = i;
		if (t->keys[i] == HT_EMPTY)
			return insert ? (free_at != SIZE_MAX ? free_at : i) : SIZE_MAX;
	}
	return insert ? free_at : SIZE_MAX;
}

static int ht_grow(struct ht *t)
{
	struct ht bigger = { .cap = t->cap * 2 };

	bigger.keys = calloc(bigger.cap, sizeof(*bigger.keys));
	bigger.ptes = calloc(bigger.cap, sizeof(*bigger.ptes));
	if (!bigger.keys || !bigger.ptes) {
		free(bigger.keys);
		free(bigger.ptes);
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->cap; i++) {
		if (t->keys[i] > HT_GONE) {
			size_t j = ht_find(&bigger, t->keys[i], true);

			bigger.keys[j] = t->keys[i];
			bigger.ptes[j] = t->ptes[i];
			bigger.used++;
		}
	}
	free(t->keys);
	free(t->ptes);
	t->keys = bigger.keys;
	t->ptes = bigger.ptes;
	t->cap = bigger.cap;
	t->used = bigger.used;
	return 0;
}

static int ht_map(void *pt, uint64_t va, uint64_t pte, unsigned order)
{
	struct ht *t = pt;
	uint64_t key = (va >> 12) + 2;
	size_t i;

	if (order != 0 || (va & (PS - 1)) || !(pte & HMM_PTE_VALID))
		return -EINVAL; /* no large entries in this format */
	if (2 * (t->used + 1) > t->cap && ht_grow(t))
		return -ENOMEM;
	i = ht_find(t, key, true);
	if (t->keys[i] != key) {
		if (t->keys[i] == HT_EMPTY)
			t->used++;
		t->keys[i] = key;
	}
	t->ptes[i] = pte & ~HMM_PTE_LARGE;
	t->maps++;
	__atomic_add_fetch(&ht_maps_total, 1, __ATOMIC_RELAXED);
	return 0;
}

static uint64_t ht_unmap(void *pt, uint64_t start, uint64_t end)
{
	struct ht *t = pt;
	uint64_t gone = 0;

	t->unmaps++;
	for (size_t i = 0; i < t->cap; i++) {
		uint64_t va = (t->keys[i] - 2) << 12;

		if (t->keys[i] > HT_GONE && va >= (start & ~(PS - 1)) && va < end) {
			t->keys[i] = HT_GONE;
			gone++;
		}
	}
	return gone;
}

static void ht_protect(void *pt, uint64_t start, uint64_t end, uint64_t clear)
{
	struct ht *t = pt;

	clear &= ~(HMM_PTE_VALID | HMM_PTE_LARGE) & (PS - 1);
	for (size_t i = 0; i < t->cap; i++) {
		uint64_t va = (t->keys[i] - 2) << 12;

		if (t->keys[i] > HT_GONE && va >= (start & ~(PS - 1)) && va < end)
			t->ptes[i] &= ~clear;
	}
}

static uint64_t ht_lookup(void *pt, uint64_t va, unsigned *order)
{
	struct ht *t = pt;
	size_t i = ht_find(t, (va >> 12) + 2, false);

	t->lookups++;
	if (order)
		*order = 0;
	return i == SIZE_MAX ? 0 : t->ptes[i];
}

static int ht_walk(void *pt, uint64_t start, uint64_t end,
		   int (*fn)(void *arg, uint64_t va, uint64_t pte, unsigned order), void *arg)
{
	for (uint64_t va = start & ~(PS - 1); va < end; va += PS) {
		uint64_t pte = ht_lookup(pt, va, NULL);
		int r = pte ? fn(arg, va, pte, 0) : 0;

		if (r)
			return r;
	}
	return 0;
}

static size_t ht_footprint(void *pt)
{
	struct ht *t = pt;

	return sizeof(*t) + t->cap * 2 * sizeof(uint64_t);
}

static const struct hmm_pt_ops ht_ops = {
	.size = sizeof(struct hmm_pt_ops), .name = "hash", .create = ht_create,
	.destroy = ht_destroy, .map = ht_map, .unmap = ht_unmap, .protect = ht_protect,
	.lookup = ht_lookup, .walk = ht_walk, .footprint = ht_footprint,
};

static void double_it(struct hmm_kernel *k, void *arg)
{
	uint64_t *x = arg, i = hmm_kernel_item(k);

	hmm_st_u64(k, &x[i], 2 * hmm_ld_u64(k, &x[i]));
}

Test(mirror, a_page_table_format_of_the_drivers_own_serves_faults_invalidations_and_kernels)
{
	struct hmm_pt_ops bad = ht_ops;
	struct hmm_device *d;
	struct hmm_mirror *m;
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 1 << 20, .numa_node = -1, .compute_units = 2 };
	uint64_t *x = (uint64_t *)anon(64, PROT_READ | PROT_WRITE);
	unsigned char *buf = malloc(64 * PS);
	struct hmm_mirror_stats st;
	size_t n = 64 * PS / 8;

	cr_assert_eq(hmm_device_create(&cfg, &d), 0);
	bad.unmap = NULL;
	cr_assert_eq(hmm_mirror_create_pt(d, &bad, &m), -EINVAL, "a NULL op");
	bad = ht_ops;
	bad.size = 8;
	cr_assert_eq(hmm_mirror_create_pt(d, &bad, &m), -EINVAL, "a wrong size");
	cr_assert_not_null(hmm_pt_radix());
	cr_assert_eq(hmm_pt_radix()->size, sizeof(struct hmm_pt_ops));
	cr_assert_eq(hmm_mirror_create_pt(d, &ht_ops, &m), 0);
	for (size_t i = 0; i < n; i++)
		x[i] = i;
	cr_assert_eq(hmm_mirror_read(m, (uint64_t)(uintptr_t)x, buf, 64 * PS), 0);
	cr_assert_eq(memcmp(buf, x, 64 * PS), 0);
	cr_assert_eq(ht_maps_total, 64, "the mirror mapped through the test's format");
	cr_assert_eq(hmm_launch(m, n, double_it, x), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(x[i], 2 * i, "x[%zu]", i);
	hmm_mirror_stats(m, &st);
	cr_assert_eq(st.mapped_pages, 64);
	/* An invalidation goes through the format's unmap. */
	cr_assert_eq(madvise(x, 32 * PS, MADV_DONTNEED), 0);
	hmm_mirror_stats(m, &st);
	cr_assert_eq(st.mapped_pages, 32);
	cr_assert_eq(hmm_mirror_read(m, (uint64_t)(uintptr_t)x, buf, 8), 0);
	cr_assert_eq(((uint64_t *)buf)[0], 0, "the cleared page reads zero");
	hmm_mirror_destroy(m);
	cr_assert_eq(hmm_device_destroy(d), 0);
	free(buf);
	munmap(x, 64 * PS);
}
