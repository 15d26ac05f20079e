/* SPDX-License-Identifier: MIT */
/*
 * test_conformance_migrate.c - the migration scenarios of the kernel's HMM
 * selftest (tools/testing/selftests/mm/hmm-tests.c, run against the
 * dmirror test driver lib/test_hmm.c), ported to libhmm's own API.
 *
 * Each test names the kernel scenario it ports in a comment.  What the
 * kernel's driver does through an ioctl, a test does with libhmm's calls:
 *
 *   MIGRATE_TO_DEV    hmm_migrate_to_device(); the kernel's cpages (pages
 *                     the device then holds) is checked as the pages that
 *                     moved plus those already there, and "what the device
 *                     read" as hmm_mirror_read() by the owner device, which
 *                     must not bring a page back (cpu_faults unchanged)
 *   MIGRATE_TO_SYS    hmm_migrate_to_ram()
 *   RELEASE           hmm_device_evict()
 *   WRITE (a child's) hmm_mirror_write() through a device the child makes
 *   FLAGS FAIL_ALLOC  a driver built on the three phases whose allocation
 *                     fails once (see "allocation failures" below)
 *
 * The one-device fixture (the kernel's "hmm") and the two-device fixture
 * ("hmm2") run with private and with coherent devices, as the kernel's
 * variants do: suites migrate_private, migrate_coherent, migrate2_private
 * and migrate2_coherent.  Buffers are 4 MiB (1024 pages) and loops run 10
 * times, as in the kernel; the huge-page scenarios use PMD-sized aligned
 * regions with MADV_HUGEPAGE (MADV_COLLAPSE for the fault scenario).
 *
 * Where libhmm and the kernel differ, the test asserts libhmm's documented
 * behaviour and says why next to it:
 *  - A coherent embedded device holds anonymous pages as a private one
 *    does: the CPU cannot map a device page in place inside an anonymous
 *    mapping from user space, so a CPU access brings it back.  The coherent
 *    variants therefore bring pages back explicitly where the kernel does
 *    (migrate_multiple) and otherwise check the same data.
 *  - hmm_migrate_to_device() reports unmapped and unreadable pages as
 *    -ENOENT (pages that did not move); the kernel's -EINVAL comes from its
 *    test driver's own check of the VMAs before it migrates (migrate_mixed).
 */
#define _GNU_SOURCE
#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define PS 4096UL
#define NPAGES 1024UL /* HMM_BUFFER_SIZE: 4 MiB */
#define NTIMES 10

/* Debian 12's headers are older than MADV_COLLAPSE (Linux 6.1). */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static struct hmm_device *dev0, *dev1;
static struct hmm_mirror *mir0, *mir1;
static unsigned dev_type;

static void make_device(unsigned type, struct hmm_device **d, struct hmm_mirror **m)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = type,
					 .memory = 16 << 20, .numa_node = -1 };

	cr_assert_eq(hmm_device_create(&cfg, d), 0);
	cr_assert_eq(hmm_mirror_create(*d, m), 0);
}

static void init_one(unsigned type)
{
	dev_type = type;
	make_device(type, &dev0, &mir0);
}

static void init_two(unsigned type)
{
	init_one(type);
	make_device(type, &dev1, &mir1);
}

static void init_private(void)
{
	init_one(HMM_DEVICE_PRIVATE);
}

static void init_coherent(void)
{
	init_one(HMM_DEVICE_COHERENT);
}

static void init2_private(void)
{
	init_two(HMM_DEVICE_PRIVATE);
}

static void init2_coherent(void)
{
	init_two(HMM_DEVICE_COHERENT);
}

static void fini(void)
{
	if (mir1)
		hmm_mirror_destroy(mir1);
	if (mir0)
		hmm_mirror_destroy(mir0);
	if (dev1)
		cr_assert_eq(hmm_device_destroy(dev1), 0);
	if (dev0)
		cr_assert_eq(hmm_device_destroy(dev0), 0);
	mir0 = mir1 = NULL;
	dev0 = dev1 = NULL;
}

TestSuite(migrate_private, .init = init_private, .fini = fini, .timeout = 120);
TestSuite(migrate_coherent, .init = init_coherent, .fini = fini, .timeout = 120);
TestSuite(migrate2_private, .init = init2_private, .fini = fini, .timeout = 120);
TestSuite(migrate2_coherent, .init = init2_coherent, .fini = fini, .timeout = 120);

/* A test of the one-device fixture, run with a private and a coherent device. */
#define BOTH_VARIANTS(name)                                                              \
	static void name(void);                                                          \
	Test(migrate_private, name) { name(); }                                          \
	Test(migrate_coherent, name) { name(); }                                         \
	static void name(void)

/* The same for the two-device fixture. */
#define BOTH_VARIANTS2(name)                                                             \
	static void name(void);                                                          \
	Test(migrate2_private, name) { name(); }                                         \
	Test(migrate2_coherent, name) { name(); }                                        \
	static void name(void)

/* ---- helpers ---------------------------------------------------------------- */

static struct hmm_device_stats dstats(struct hmm_device *d)
{
	struct hmm_device_stats st;

	cr_assert_eq(hmm_device_stats(d, &st), 0);
	return st;
}

static void *map_anon(size_t len, int prot, int flags)
{
	void *p = mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

/* The kernel's pattern: int i at index i (seed 0), or i + seed. */
static void fill_ints(void *p, size_t len, int seed)
{
	int *v = p;

	for (size_t i = 0; i < len / sizeof(int); i++)
		v[i] = (int)i + seed;
}

/* The ints of [p, p + len) must be first + i: index first + i of the buffer. */
static void expect_ints_from(const void *p, size_t len, size_t first, int seed, const char *what)
{
	const int *v = p;

	for (size_t i = 0; i < len / sizeof(int); i++)
		if (v[i] != (int)(first + i) + seed)
			cr_assert_fail("%s: int %zu is %d, not %d", what, first + i, v[i],
				       (int)(first + i) + seed);
}

static void expect_ints(const void *p, size_t len, int seed, const char *what)
{
	expect_ints_from(p, len, 0, seed, what);
}

static void expect_zero(const void *p, size_t len, const char *what)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i])
			cr_assert_fail("%s: byte %zu is 0x%02x, not 0", what, i, c[i]);
}

/* Migrate; the call must succeed and move exactly want pages. */
static void to_device(struct hmm_device *d, void *p, size_t len, uint64_t want)
{
	uint64_t moved = ~0ULL;
	int rc = hmm_migrate_to_device(d, p, len, &moved);

	cr_assert_eq(rc, 0, "hmm_migrate_to_device: %s", strerror(-rc));
	cr_assert_eq(moved, want, "moved %llu pages, not %llu", (unsigned long long)moved,
		     (unsigned long long)want);
}

/*
 * What the kernel's driver does after a migration: the device reads the
 * buffer (its own copy), into a fresh buffer.  The owner device reads its
 * pages in place: no page comes back to host RAM for it.
 */
static void *device_read(struct hmm_mirror *m, struct hmm_device *d, const void *p, size_t len)
{
	uint64_t faults = dstats(d).cpu_faults;
	void *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	memset(buf, 0xff, len);
	rc = hmm_mirror_read(m, (uint64_t)(uintptr_t)p, buf, len);
	cr_assert_eq(rc, 0, "hmm_mirror_read: %s", strerror(-rc));
	cr_assert_eq(dstats(d).cpu_faults, faults, "the owner's read brought pages back");
	return buf;
}

static void device_read_ints(const void *p, size_t len, int seed)
{
	void *buf = device_read(mir0, dev0, p, len);

	expect_ints(buf, len, seed, "what the device read");
	free(buf);
}

/*
 * The kernel's usual start: a private anonymous buffer of size bytes filled
 * with the pattern (seed), migrated whole to device 0, which reads it back.
 */
static int *migrated_buffer(size_t size, int seed)
{
	int *p = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_ints(p, size, seed);
	to_device(dev0, p, size, size / PS);
	device_read_ints(p, size, seed);
	return p;
}

/* Is THP in use for madvised regions ("always" or "madvise")? */
static bool thp_enabled(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char line[128] = "";
	bool on;

	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	on = !strstr(line, "[never]") && line[0];
	return on;
}

/* The AnonHugePages (KiB) of the mapping that holds p, from /proc/self/smaps. */
static unsigned long anon_huge_kb(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false;
	unsigned long kb = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e, v;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = s <= (uintptr_t)p && (uintptr_t)p < e;
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &v) == 1)
			kb = v;
	}
	fclose(f);
	return kb;
}

/*
 * A size-aligned region of size bytes inside a mapping of twice that (the
 * kernel's huge-page buffers), with MADV_HUGEPAGE or MADV_NOHUGEPAGE as
 * asked (or neither, if advice is -1).  *base receives the mapping, to
 * unmap 2 * size bytes from.
 */
static void *aligned_region(size_t size, int prot, int advice, void **base)
{
	unsigned char *m = map_anon(2 * size, prot, MAP_PRIVATE);
	unsigned char *p = (unsigned char *)(((uintptr_t)m + size - 1) & ~(uintptr_t)(size - 1));

	if (advice >= 0)
		cr_assert_eq(madvise(p, size, advice), 0);
	*base = m;
	return p;
}

/*
 * Unmap len bytes at map but hole_len at hole inside them: a hole the test
 * made is free address space that libhmm's or a sanitizer's allocations
 * may have taken since.
 */
static void unmap_around(void *map, size_t len, void *hole, size_t hole_len)
{
	char *m = map, *h = hole, *e = m + len;

	if (!hole_len) {
		cr_assert_eq(munmap(m, len), 0);
		return;
	}
	if (h > m)
		cr_assert_eq(munmap(m, (size_t)(h - m)), 0);
	if (h + hole_len < e)
		cr_assert_eq(munmap(h + hole_len, (size_t)(e - h - hole_len)), 0);
}

/* ---- the scenarios ------------------------------------------------------------ */

/* Kernel: migrate.  The whole buffer moves; the device holds it. */
BOTH_VARIANTS(a_whole_buffer_moves_and_the_device_reads_it_in_place)
{
	size_t size = NPAGES * PS;
	int *p = migrated_buffer(size, 0);

	cr_assert_eq(dstats(dev0).used, size);
	cr_assert_eq(dstats(dev0).pages_in, NPAGES);
	/* And the CPU gets the same data back. */
	expect_ints(p, size, 0, "the CPU's read after the migration");
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(munmap(p, size), 0);
}

/*
 * Kernel: migrate_fault.  Half the buffer comes back on a CPU read; the
 * next migration moves that half again and leaves the other where it is.
 */
BOTH_VARIANTS(pages_read_back_by_the_cpu_migrate_again_with_the_rest_staying)
{
	size_t size = NPAGES * PS;
	int *p = migrated_buffer(size, 0);

	expect_ints(p, size / 2, 0, "the CPU's read of the first half");
	cr_assert_eq(dstats(dev0).cpu_faults, NPAGES / 2);
	cr_assert_eq(dstats(dev0).used, size / 2);
	/* The kernel's cpages is npages: moved now plus already there. */
	to_device(dev0, p, size, NPAGES / 2);
	cr_assert_eq(dstats(dev0).used, size);
	device_read_ints(p, size, 0);
	cr_assert_eq(munmap(p, size), 0);
}

/*
 * Kernel: migrate_release.  The kernel's RELEASE evicts every chunk of the
 * device's memory: all its pages go back to system memory, then the CPU
 * reads them without a device fault.  libhmm's hmm_device_evict() is that
 * eviction.
 */
BOTH_VARIANTS(releasing_the_device_memory_brings_every_page_back)
{
	size_t size = NPAGES * PS;
	int *p = migrated_buffer(size, 0);

	cr_assert_eq(hmm_device_evict(dev0), 0);
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(dstats(dev0).pages_out, NPAGES);
	expect_ints(p, size / 2, 0, "the CPU's read after the release");
	cr_assert_eq(dstats(dev0).cpu_faults, 0, "nothing was left on the device to fault");
	cr_assert_eq(munmap(p, size), 0);
}

/* Kernel: migrate_shared.  Shared anonymous memory cannot move: -ENOENT. */
BOTH_VARIANTS(shared_anonymous_memory_is_refused_with_enoent)
{
	size_t size = NPAGES * PS;
	int *p = map_anon(size, PROT_READ | PROT_WRITE, MAP_SHARED);
	uint64_t moved = 7;

	fill_ints(p, size, 0);
	cr_assert_eq(hmm_migrate_to_device(dev0, p, size, &moved), -ENOENT);
	cr_assert_eq(moved, 0);
	cr_assert_eq(dstats(dev0).used, 0);
	expect_ints(p, size, 0, "the shared buffer after the refusal");
	cr_assert_eq(munmap(p, size), 0);
}

/* The three phases' view of a range: how many pages setup collects. */
static uint64_t collectable(struct hmm_device *d, void *p, size_t npages)
{
	uint64_t src[8], dst[8];
	struct hmm_migrate_vma a = { .start = (uint64_t)(uintptr_t)p,
				     .end = (uint64_t)(uintptr_t)p + npages * PS,
				     .src = src, .dst = dst, .pgmap_owner = d,
				     .flags = HMM_MIGRATE_VMA_SELECT_SYSTEM };

	cr_assert_leq(npages, 8);
	cr_assert_eq(hmm_migrate_vma_setup(&a), 0);
	hmm_migrate_vma_pages(&a); /* no destinations: nothing moves */
	hmm_migrate_vma_finalize(&a);
	return a.cpages;
}

/*
 * Kernel: migrate_mixed (two devices).  Six pages: PROT_NONE, then a hole
 * at page 1, a read-only zero page (2), a read-only page with data (3) and
 * two writable pages (4, 5).
 *
 * The kernel's driver looks up the VMA of each part before migrating and
 * answers -EINVAL for a hole or an unreadable mapping.  libhmm's
 * hmm_migrate_to_device() is documented to answer -ENOENT for pages that
 * could not move, unmapped ones included, and its three phases collect no
 * such page (a driver that wants the kernel's -EINVAL checks the mappings
 * itself, as the kernel's does).  Both refuse the same pages and move
 * nothing: that is what is checked, with libhmm's code.
 */
BOTH_VARIANTS2(unreadable_and_unmapped_pages_are_refused_and_readable_ones_move)
{
	unsigned char *p = map_anon(6 * PS, PROT_NONE, MAP_PRIVATE);
	uint64_t moved = 7;
	unsigned char *buf;
	int val;

	/* PROT_NONE: nothing moves. */
	cr_assert_eq(hmm_migrate_to_device(dev1, p, 6 * PS, &moved), -ENOENT);
	cr_assert_eq(moved, 0);
	cr_assert_eq(collectable(dev1, p, 6), 0, "setup collects no unreadable page");
	/* A hole after the first page: still nothing. */
	cr_assert_eq(munmap(p + PS, PS), 0);
	moved = 7;
	cr_assert_eq(hmm_migrate_to_device(dev1, p, 3 * PS, &moved), -ENOENT);
	cr_assert_eq(moved, 0);
	cr_assert_eq(collectable(dev1, p, 3), 0, "setup collects no unmapped page");
	cr_assert_eq(dstats(dev1).used, 0);

	cr_assert_eq(mprotect(p + 2 * PS, PS, PROT_READ), 0);
	val = *(int *)(p + 2 * PS) + 3; /* the zero page */
	cr_assert_eq(val, 3);
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ | PROT_WRITE), 0);
	*(int *)(p + 3 * PS) = val;
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ), 0);
	cr_assert_eq(mprotect(p + 4 * PS, 2 * PS, PROT_READ | PROT_WRITE), 0);
	*(int *)(p + 4 * PS) = val;
	*(int *)(p + 5 * PS) = val;

	/* Pages 2 to 5 move to device 1. */
	to_device(dev1, p + 2 * PS, 4 * PS, 4);
	cr_assert_eq(dstats(dev1).used, 4 * PS);
	buf = device_read(mir1, dev1, p + 2 * PS, 4 * PS);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(*(int *)(buf + i * PS), i ? val : 0, "page %d's first int", i + 2);
	free(buf);

	/* Page 5 is device 1's: device 0 cannot take it. */
	moved = 7;
	cr_assert_eq(hmm_migrate_to_device(dev0, p + 5 * PS, PS, &moved), -ENOENT);
	cr_assert_eq(moved, 0);
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(dstats(dev1).used, 4 * PS, "page 5 stayed on device 1");

	/* The CPU reads them all back, read-only pages included. */
	cr_assert_eq(*(int *)(p + 2 * PS), 0);
	for (int i = 3; i < 6; i++)
		cr_assert_eq(*(int *)(p + i * PS), val, "page %d", i);
	cr_assert_eq(dstats(dev1).used, 0);
	cr_assert_eq(munmap(p, PS), 0);
	cr_assert_eq(munmap(p + 2 * PS, 4 * PS), 0);
}

/*
 * Kernel: migrate_multiple.  Ten rounds of a fresh buffer to the device and
 * back.  Private devices: the CPU's read brings each page back.  Coherent
 * ones: the kernel brings the pages back explicitly first (the CPU would use
 * them in place), and so does this test.
 */
BOTH_VARIANTS(ten_buffers_in_a_row_go_to_the_device_and_come_back)
{
	size_t size = NPAGES * PS;

	for (int c = 0; c < NTIMES; c++) {
		uint64_t faults = dstats(dev0).cpu_faults;
		int *p = migrated_buffer(size, c);

		if (dev_type == HMM_DEVICE_COHERENT) {
			uint64_t moved = 0;

			cr_assert_eq(hmm_migrate_to_ram(p, size, &moved), 0);
			cr_assert_eq(moved, NPAGES, "round %d", c);
		}
		expect_ints(p, size, c, "the CPU's read");
		cr_assert_eq(dstats(dev0).cpu_faults - faults,
			     dev_type == HMM_DEVICE_COHERENT ? 0 : NPAGES, "round %d", c);
		cr_assert_eq(dstats(dev0).used, 0, "round %d", c);
		cr_assert_eq(munmap(p, size), 0);
	}
}

/*
 * Kernel: anon_write_child, the rounds that migrate first (with and without
 * THP).  After the fork the child sees the parent's data, writes through a
 * device of its own (its own mirror of its own address space) and sees
 * that; the parent's buffer does not change.
 */
enum child_failure {
	CHILD_OK,
	CHILD_SAW_WRONG_DATA,
	CHILD_NO_DEVICE,
	CHILD_WRITE_FAILED,
	CHILD_WRONG_FAULTS,
	CHILD_WROTE_WRONG_DATA,
};

static const char *const child_failures[] = {
	"ok", "saw data other than the parent's", "could not make a device",
	"device write failed", "device write faulted other than once",
	"did not see its device's write",
};

static int child_writes_through_its_own_device(int *p, size_t size, const int *data)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = dev_type,
					 .memory = 16 << 20, .numa_node = -1 };
	struct hmm_mirror_stats st;
	struct hmm_device *d;
	struct hmm_mirror *m;

	for (size_t i = 0; i < size / sizeof(int); i++)
		if (p[i] != (int)i)
			return CHILD_SAW_WRONG_DATA;
	if (hmm_device_create(&cfg, &d) || hmm_mirror_create(d, &m))
		return CHILD_NO_DEVICE;
	if (hmm_mirror_write(m, (uint64_t)(uintptr_t)p, data, size))
		return CHILD_WRITE_FAILED;
	if (hmm_mirror_stats(m, &st) || st.faults != 1)
		return CHILD_WRONG_FAULTS;
	for (size_t i = 0; i < size / sizeof(int); i++)
		if (p[i] != -(int)i)
			return CHILD_WROTE_WRONG_DATA;
	hmm_mirror_destroy(m);
	hmm_device_destroy(d);
	return CHILD_OK;
}

BOTH_VARIANTS(a_child_writing_through_its_own_device_leaves_the_parent_unchanged)
{
	skip_under_sanitizers_if_children_start_threads();
	for (int use_thp = 0; use_thp < 2; use_thp++) {
		size_t size = use_thp ? thp_pmd_size() : NPAGES * PS;
		void *base;
		int *p = use_thp ? aligned_region(size, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base)
				 : (base = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE));
		int *data = malloc(size);
		int status;
		pid_t pid;

		cr_assert_not_null(data);
		for (size_t i = 0; i < size / sizeof(int); i++)
			data[i] = -(int)i;
		fill_ints(p, size, 0);
		to_device(dev0, p, size, size / PS);
		pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0)
			_exit(child_writes_through_its_own_device(p, size, data));
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status), "the child died (status 0x%x)", status);
		cr_assert_eq(WEXITSTATUS(status), CHILD_OK, "%s buffer: the child %s",
			     use_thp ? "THP" : "4 MiB",
			     WEXITSTATUS(status) < 6 ? child_failures[WEXITSTATUS(status)] : "?");
		expect_ints(p, size, 0, "the parent's buffer after the child wrote");
		free(data);
		cr_assert_eq(munmap(base, use_thp ? 2 * size : size), 0);
	}
}

/* ---- huge pages ------------------------------------------------------------------ */

/* Kernel: migrate_anon_huge_empty.  A read-only THP region never touched. */
BOTH_VARIANTS(an_empty_huge_page_region_migrates_as_zeros)
{
	size_t size = thp_pmd_size();
	void *base;
	unsigned char *p = aligned_region(size, PROT_READ, MADV_HUGEPAGE, &base), *buf;

	to_device(dev0, p, size, size / PS);
	buf = device_read(mir0, dev0, p, size);
	expect_zero(buf, size, "what the device read");
	free(buf);
	expect_zero(p, size, "the CPU's read");
	cr_assert_eq(munmap(base, 2 * size), 0);
}

/* Kernel: migrate_anon_huge_zero.  A read-only THP region read once (the
 * huge zero page, where THP is on). */
BOTH_VARIANTS(a_huge_zero_page_migrates_as_zeros_and_faults_back_as_zeros)
{
	size_t size = thp_pmd_size();
	void *base;
	unsigned char *p = aligned_region(size, PROT_READ, MADV_HUGEPAGE, &base), *buf;

	cr_assert_eq(*(volatile int *)p, 0);
	to_device(dev0, p, size, size / PS);
	buf = device_read(mir0, dev0, p, size);
	expect_zero(buf, size, "what the device read");
	free(buf);
	expect_zero(p, size, "the CPU's read");
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(munmap(base, 2 * size), 0);
}

/*
 * Kernel: migrate_anon_huge_free.  MADV_FREE over a migrated THP region
 * succeeds.  MADV_FREE lets the system drop the pages or keep them: each
 * page must read either its data or zeros afterwards.
 */
BOTH_VARIANTS(madv_free_over_a_migrated_huge_page_region_succeeds)
{
	size_t size = thp_pmd_size();
	void *base;
	int *p = aligned_region(size, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);

	fill_ints(p, size, 0);
	cr_log_info("THP before the migration: %lu KiB (THP %s)", anon_huge_kb(p),
		    thp_enabled() ? "on" : "off");
	to_device(dev0, p, size, size / PS);
	device_read_ints(p, size, 0);
	cr_assert_eq(madvise(p, size, MADV_FREE), 0);
	for (size_t pg = 0; pg < size / PS; pg++) {
		const int *v = p + pg * PS / sizeof(int);

		if (v[1] == 0)
			expect_zero(v, PS, "a page dropped by MADV_FREE");
		else
			expect_ints_from(v, PS, pg * PS / sizeof(int), 0, "a page MADV_FREE kept");
	}
	cr_assert_eq(munmap(base, 2 * size), 0);
}

/* Is the CPU page of va present, from /proc/self/pagemap? */
static bool cpu_present(int pagemap, const void *va)
{
	uint64_t e = 0;

	cr_assert_eq(pread(pagemap, &e, sizeof(e), (off_t)((uintptr_t)va / PS * 8)), sizeof(e));
	return e >> 63;
}

/*
 * Kernel: migrate_anon_huge_fault.  A region collapsed into a THP moves to
 * the device, its CPU pages are gone (private devices, as the kernel
 * checks), and the CPU faults the data back.
 */
BOTH_VARIANTS(a_collapsed_huge_page_migrates_and_faults_back)
{
	size_t size = thp_pmd_size();
	void *base;
	int *p = aligned_region(size, PROT_READ | PROT_WRITE, -1, &base);

	fill_ints(p, size, 0);
	if (!thp_enabled())
		cr_skip_test("transparent huge pages are off (never)");
	cr_assert_eq(madvise(p, size, MADV_COLLAPSE), 0, "MADV_COLLAPSE: %s", strerror(errno));
	cr_assert_geq(anon_huge_kb(p), size / 1024, "the region is one huge page");
	to_device(dev0, p, size, size / PS);
	device_read_ints(p, size, 0);
	if (dev_type == HMM_DEVICE_PRIVATE) {
		int pagemap = open("/proc/self/pagemap", O_RDONLY);

		cr_assert_geq(pagemap, 0);
		for (size_t pg = 0; pg < size / PS; pg++)
			cr_assert(!cpu_present(pagemap, (char *)p + pg * PS),
				  "page %zu still has its CPU page", pg);
		close(pagemap);
	}
	expect_ints(p, size, 0, "the CPU's read");
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(munmap(base, 2 * size), 0);
}

/*
 * Kernel: migrate_partial_unmap_fault.  Half of a migrated PMD-sized region
 * is unmapped at offset 0, 1/4 and 1/2, with THP and without; the device
 * pages under it are freed and the rest faults back.
 */
BOTH_VARIANTS(unmapping_half_a_migrated_region_frees_it_and_the_rest_faults_back)
{
	size_t size = thp_pmd_size(), half = size / 2;
	size_t offsets[] = { 0, size / 4, size / 2 };

	for (int use_thp = 0; use_thp < 2; use_thp++) {
		for (size_t j = 0; j < 3; j++) {
			void *base;
			int *p = aligned_region(size, PROT_READ | PROT_WRITE,
						use_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE, &base);
			size_t off = offsets[j];

			fill_ints(p, size, 0);
			to_device(dev0, p, size, size / PS);
			device_read_ints(p, size, 0);
			cr_assert_eq(munmap((char *)p + off, half), 0);
			cr_assert_eq(dstats(dev0).used, size - half, "thp %d, offset %zu", use_thp,
				     off);
			if (off)
				expect_ints(p, off, 0, "before the hole");
			if (off + half < size)
				expect_ints_from((char *)p + off + half, size - off - half,
						 (off + half) / sizeof(int), 0, "after the hole");
			cr_assert_eq(dstats(dev0).used, 0, "thp %d, offset %zu", use_thp, off);
			unmap_around(base, 2 * size, (char *)p + off, half);
		}
	}
}

/*
 * Kernel: migrate_remap_fault.  A PMD-sized region is moved by mremap (to
 * 0, 1/4 or 1/2 of a size past its end) before or after its migration,
 * with and without MREMAP_DONTUNMAP, with THP and without; the data is at
 * the new place.  libhmm brings device pages back before an mremap (see
 * hmm_migrate_vma(3)), where the kernel moves the device entries; and the
 * target is not unmapped first (see below).
 */
BOTH_VARIANTS(a_region_moved_by_mremap_before_or_after_migrating_keeps_its_data)
{
	size_t size = thp_pmd_size();
	size_t offsets[] = { 0, size / 4, size / 2 };

	for (int before = 0; before < 2; before++)
	for (int dont_unmap = 0; dont_unmap < 2; dont_unmap++)
	for (int use_thp = 0; use_thp < 2; use_thp++)
	for (size_t j = 0; j < 3; j++) {
		int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dont_unmap ? MREMAP_DONTUNMAP : 0);
		unsigned char *m = map_anon(8 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
		unsigned char *p = (unsigned char *)(((uintptr_t)m + size - 1) & ~(uintptr_t)(size - 1));
		unsigned char *target = p + size + offsets[j], *q = p;

		cr_assert_eq(madvise(p, size, use_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE), 0);
		/* The kernel's test unmaps the target first.  Here it stays
		 * mapped, ours, until MREMAP_FIXED replaces it: unmapped, it
		 * is free address space that libhmm's or a sanitizer's
		 * allocations may take meanwhile, and the mremap would then
		 * replace their memory. */
		fill_ints(p, size, 0);
		if (before) {
			q = mremap(p, size, size, flags, target);
			cr_assert_eq(q, target, "mremap: %s", strerror(errno));
		}
		to_device(dev0, q, size, size / PS);
		device_read_ints(q, size, 0);
		if (!before) {
			q = mremap(p, size, size, flags, target);
			cr_assert_eq(q, target, "mremap: %s", strerror(errno));
		}
		expect_ints(q, size, 0, "the CPU's read at the new place");
		if (dont_unmap)
			expect_zero(p, size, "the place MREMAP_DONTUNMAP left");
		cr_assert_eq(dstats(dev0).used, 0, "before %d, dontunmap %d, thp %d, offset %zu",
			     before, dont_unmap, use_thp, offsets[j]);
		/* The target lies inside the 8 * size bytes first mapped;
		 * without MREMAP_DONTUNMAP the old place is a hole. */
		unmap_around(m, 8 * size, p, dont_unmap ? 0 : size);
	}
}

/*
 * ---- allocation failures (kernel: migrate_anon_huge_err, _zero_err)
 *
 * The kernel's FAIL_ALLOC is a flag of its test driver: the driver's next
 * device allocation fails once (there, the huge page's, and the driver
 * falls back to small pages).  libhmm has no such knob and needs none: the
 * allocation is the driver's, between setup and pages, so a driver built on
 * the three phases fails it itself, and the dmirror shim will do the same
 * around hmm_device_page_alloc().  What libhmm must get right is the rest:
 * a page left without a destination stays where it was, usable, and a
 * second round moves it.  The driver below fails its next allocation when
 * fail_alloc is set, and falls back by migrating what stayed again.
 */
struct driver {
	struct hmm_device *dev;
	bool fail_alloc;
	unsigned failed; /* allocations it failed */
};

static bool take_failure(struct driver *drv)
{
	if (!drv->fail_alloc)
		return false;
	drv->fail_alloc = false;
	drv->failed++;
	return true;
}

/* One round of the three phases; returns the pages that moved. */
static uint64_t driver_round(struct driver *drv, void *p, size_t len, bool to_ram)
{
	uint64_t n = len / PS, moved = 0;
	uint64_t *src = calloc(n, sizeof(*src)), *dst = calloc(n, sizeof(*dst));
	void **ram = calloc(n, sizeof(*ram));
	struct hmm_migrate_vma a = {
		.start = (uint64_t)(uintptr_t)p, .end = (uint64_t)(uintptr_t)p + len,
		.src = src, .dst = dst, .pgmap_owner = drv->dev,
		.flags = to_ram ? HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE : HMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	int64_t failed_page = -1;

	cr_assert(src && dst && ram);
	cr_assert_eq(hmm_migrate_vma_setup(&a), 0);
	for (uint64_t i = 0; i < n; i++) {
		void *page = NULL;

		if (!(src[i] & HMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (take_failure(drv)) {
			failed_page = (int64_t)i;
			continue;
		}
		if (to_ram) {
			page = ram[i] = aligned_alloc(PS, PS);
			cr_assert_not_null(page);
		} else {
			cr_assert_eq(hmm_device_page_alloc(drv->dev, &page), 0);
		}
		if (src[i] & HMM_MIGRATE_PFN_VALID)
			cr_assert_eq(hmm_device_dma(drv->dev, page, hmm_migrate_pfn_to_addr(src[i]),
						    PS), 0);
		else
			memset(page, 0, PS);
		dst[i] = hmm_migrate_pfn(page);
	}
	hmm_migrate_vma_pages(&a);
	for (uint64_t i = 0; i < n; i++)
		moved += !!(src[i] & HMM_MIGRATE_PFN_MIGRATE);
	if (failed_page >= 0)
		cr_assert(!(src[failed_page] & HMM_MIGRATE_PFN_MIGRATE),
			  "page %lld had no destination and did not move", (long long)failed_page);
	hmm_migrate_vma_finalize(&a);
	for (uint64_t i = 0; i < n; i++)
		free(ram[i]);
	free(ram);
	free(src);
	free(dst);
	return moved;
}

/*
 * Migrate the whole range (to the device, or back to host RAM), falling
 * back to a second round for what a failed allocation left behind.  The
 * first round must have moved all but the failed page.
 */
static void driver_migrate(struct driver *drv, void *p, size_t len, bool to_ram)
{
	unsigned failed = drv->failed;
	bool armed = drv->fail_alloc;
	uint64_t first = driver_round(drv, p, len, to_ram), second = 0;

	cr_assert_eq(drv->failed - failed, armed ? 1 : 0, "the armed failure was used");
	cr_assert_eq(first, len / PS - (armed ? 1 : 0), "the first round moved %llu pages",
		     (unsigned long long)first);
	if (armed) {
		second = driver_round(drv, p, len, to_ram);
		cr_assert_eq(second, 1, "the fallback moved %llu pages", (unsigned long long)second);
	}
}

/* Kernel: migrate_anon_huge_err. */
BOTH_VARIANTS(a_failed_device_allocation_falls_back_and_the_huge_page_still_migrates)
{
	size_t size = thp_pmd_size();
	struct driver drv = { .dev = dev0 };
	void *base;
	int *p = aligned_region(size, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);
	uint64_t faults;

	fill_ints(p, size, 0);
	drv.fail_alloc = true;
	driver_migrate(&drv, p, size, false);
	cr_assert_eq(dstats(dev0).used, size);
	device_read_ints(p, size, 0);
	faults = dstats(dev0).cpu_faults;
	cr_assert_eq(p[2048], 2048, "one page faulted back");
	cr_assert_eq(dstats(dev0).cpu_faults - faults, 1);

	/* A fresh region, migrated whole; the way back fails once. */
	cr_assert_eq(munmap(base, 2 * size), 0);
	p = aligned_region(size, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);
	fill_ints(p, size, 0);
	driver_migrate(&drv, p, size, false);
	cr_assert_eq(dstats(dev0).used, size);
	drv.fail_alloc = true;
	faults = dstats(dev0).cpu_faults;
	driver_migrate(&drv, p, size, true);
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(p[2048], 2048);
	expect_ints(p, size, 0, "the CPU's read after the way back");
	cr_assert_eq(dstats(dev0).cpu_faults, faults, "every page came back by migration");
	cr_assert_eq(drv.failed, 2);
	cr_assert_eq(munmap(base, 2 * size), 0);
}

/* Kernel: migrate_anon_huge_zero_err. */
BOTH_VARIANTS(a_failed_device_allocation_falls_back_and_the_huge_zero_page_still_migrates)
{
	size_t size = thp_pmd_size();
	struct driver drv = { .dev = dev0 };
	void *base;
	int *p = aligned_region(size, PROT_READ, MADV_HUGEPAGE, &base);
	unsigned char *buf;

	drv.fail_alloc = true;
	driver_migrate(&drv, p, size, false);
	buf = device_read(mir0, dev0, p, size);
	expect_zero(buf, size, "what the device read");
	free(buf);
	cr_assert_eq(p[2048], 0, "one page faulted back");

	/* A fresh region whose zero page is mapped first. */
	cr_assert_eq(munmap(base, 2 * size), 0);
	p = aligned_region(size, PROT_READ, MADV_HUGEPAGE, &base);
	cr_assert_eq(*(volatile int *)p, 0);
	drv.fail_alloc = true;
	driver_migrate(&drv, p, size, false);
	expect_zero(p, size, "the CPU's read");
	cr_assert_eq(dstats(dev0).used, 0);
	cr_assert_eq(drv.failed, 2);
	cr_assert_eq(munmap(base, 2 * size), 0);
}
