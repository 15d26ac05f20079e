/* SPDX-License-Identifier: MIT */
/*
 * test_dmirror.c - libhmm_dmirror.so, the kernel's HMM test driver in user
 * space: this program knows nothing of libhmm.  It opens /dev/hmm_dmirrorN
 * and uses the HMM_DMIRROR_* ioctls of hmm_dmirror.h, as a program written
 * for the kernel's lib/test_hmm.c does, and checks what the driver would
 * answer: data, errno values, cpages and faults, snapshot bytes.
 *
 * The scenarios are those of the kernel's selftest
 * (tools/testing/selftests/mm/hmm-tests.c), each named after what it checks
 * with the kernel's name in a comment above it, with the kernel's sizes
 * (4 MiB buffers, PMD-sized aligned regions for huge pages, 10 rounds where
 * it loops) and expectations.  Its fixtures: "hmm" opens one device, "hmm2"
 * two; each has a private variant (devices 0 and 1) and a coherent one (2
 * and 3), and every scenario runs on both, as private_... and coherent_...
 * tests.  The hugetlb scenarios skip when no huge page is free
 * (/proc/sys/vm/nr_hugepages).
 *
 * Where these tests check otherwise than the kernel's (each is said again
 * at its test):
 *  - snapshot, coherent variant: the kernel's coherent device memory stays
 *    mapped by the CPU, so a page on the other device reads as
 *    DEV_COHERENT_REMOTE | WRITE.  libhmm_dmirror(7) BUGS: anonymous pages
 *    on a coherent device are not mapped in place, and the other device
 *    sees PROT_NONE; that is what the coherent variant checks for page 6.
 *  - anon_write_child: the kernel's child uses only a device it opens
 *    itself; here it also checks that the inherited descriptor answers
 *    ENODEV (libhmm_dmirror(7) BUGS), and the parent checks the child's exit
 *    status, not only that it exited.
 *  - migrate_anon_huge_err and migrate_anon_huge_zero_err skip when the
 *    region is not mapped by one PMD (no THP to be had), where the kernel's
 *    would fail: FAIL_ALLOC means something else for small pages.
 *  - Address space left free is free for this process's own allocators
 *    too (the shim's, libhmm's, a sanitizer's), where the kernel driver
 *    allocates none: snapshot makes its hole just before the snapshot, not
 *    before the migrations, and checks that it is still a hole after;
 *    migrate_remap_fault keeps the mremap target mapped until MREMAP_FIXED
 *    replaces it instead of unmapping it first; and a buffer with a hole
 *    is unmapped around the hole at the end, not over it.
 * Where they check more than the kernel's: exclusive checks that the pages
 * are held (CHECK_EXCLUSIVE is EPERM) before the CPU takes them back;
 * migrate_release checks the snapshot after RELEASE; migrate_mixed checks
 * the data the device read back; anon_teardown checks that a read that
 * met the munmap failed with EFAULT; the fork scenarios check the child's
 * exit status; migrate_anon_huge_err checks MIGRATE_TO_SYS's cpages.
 * The tests whose comment names no kernel scenario are the shim's own.
 * Not here: hmm_gup_test (it needs the kernel's gup_test module, which has
 * no user-space counterpart), benchmark_thp_migration (a benchmark, not a
 * check), and migrate_file_private (pages the CPU wrote in a MAP_PRIVATE
 * file mapping migrate in the kernel; libhmm migrates pages of anonymous
 * mappings only, and MIGRATE_TO_DEV answers ENOENT).
 *
 * It runs itself again under LD_PRELOAD=libhmm_dmirror.so (behind the
 * sanitizer's runtime, which must come first) when started without it;
 * DMIRROR_SHIM names the shim at build time.  Run bare (HMM_DMIRROR_TEST_BARE=1)
 * against a kernel with the test_hmm module loaded, it checks the module
 * instead.
 */
#define _GNU_SOURCE
#include <hmm_dmirror.h>

#include "dmirror_client.h"
#include "helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PS 4096UL
#define NPAGES 1024UL /* 4 MiB, as the kernel's tests */
#define NTIMES 10     /* the kernel's rounds where it loops */
#define ONE_MIB (1UL << 20)
#define INTS(bytes) ((bytes) / sizeof(int))

/* ------------------------------------------------- running under the shim */

__attribute__((constructor)) static void under_the_shim(void)
{
	if (getenv("HMM_DMIRROR_TEST_BARE") || getenv("HMM_DMIRROR_TEST_SHIMMED"))
		return;
	shim_exec(shim_own_argv(), DMIRROR_SHIM);
	abort();
}

/* ------------------------------------------------------------ the fixtures */

/* The kernel's "hmm" (one device) and "hmm2" (two) fixtures. */
struct devices {
	int fd[2];
	unsigned n;
	bool coherent;
};

/* n devices from first: 0 (private: 0 and 1) or 2 (coherent: 2 and 3). */
static struct devices devices_open(unsigned first, unsigned n)
{
	struct devices d = { { -1, -1 }, n, first >= 2 };

	for (unsigned i = 0; i < n; i++)
		d.fd[i] = dmirror_open(first + i);
	return d;
}

static void devices_close(struct devices *d)
{
	for (unsigned i = 0; i < d->n; i++)
		cr_assert_eq(close(d->fd[i]), 0, "close of device %u: %s", i, strerror(errno));
}

/* Each scenario on the private devices and on the coherent ones. */
#define BOTH_VARIANTS(scenario, description) \
	Test(dmirror, private_##description) \
	{ \
		scenario(0); \
	} \
	Test(dmirror, coherent_##description) \
	{ \
		scenario(2); \
	}

/* ------------------------------------------------------------ buffers */

struct buffer {
	void *ptr;    /* the process's memory the device uses */
	void *mirror; /* where the device's view goes */
	size_t npages;
	void *map;    /* what buffer_free unmaps, map_len bytes (NULL: nothing) */
	size_t map_len;
	char *hole;   /* hole_len bytes in map the test unmapped itself (see buffer_punch) */
	size_t hole_len;
	uint64_t cpages, faults;
};

/* One command over npages of b; 0 or -errno.  cpages and faults as written back. */
static int dcmd(int fd, unsigned long request, struct buffer *b, uint64_t npages)
{
	struct hmm_dmirror_cmd c;
	int err = dmirror_cmd(fd, request, b->ptr, b->mirror, npages, &c);

	if (!err) {
		b->cpages = c.cpages;
		b->faults = c.faults;
	}
	return err;
}

/* A buffer around ptr (npages), with a mirror of as many pages, all 0xFF. */
static struct buffer *buffer_around(void *ptr, size_t npages, void *map, size_t map_len)
{
	struct buffer *b = calloc(1, sizeof(*b));

	cr_assert(b);
	b->ptr = ptr;
	b->npages = npages;
	b->map = map;
	b->map_len = map_len;
	b->mirror = malloc(npages * PS);
	cr_assert(b->mirror);
	memset(b->mirror, 0xff, npages * PS);
	return b;
}

static struct buffer *buffer_new(size_t npages, int prot, int flags)
{
	void *p = mmap(NULL, npages * PS, prot, flags | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
	return buffer_around(p, npages, p, npages * PS);
}

/*
 * Unmap len bytes at p in b's mapping, and remember it: the hole is free
 * address space that this process's allocators (the shim's, libhmm's, a
 * sanitizer's) may take, so buffer_free must not unmap it with the rest.
 */
static void buffer_punch(struct buffer *b, void *p, size_t len)
{
	cr_assert(!b->hole_len && (char *)p >= (char *)b->map &&
		  (char *)p + len <= (char *)b->map + b->map_len, "one hole, inside the mapping");
	cr_assert_eq(munmap(p, len), 0, "munmap: %s", strerror(errno));
	b->hole = p;
	b->hole_len = len;
}

static void buffer_free(struct buffer *b)
{
	char *map = b->map, *end = map + b->map_len;

	if (map && b->hole_len) {
		if (b->hole > map)
			munmap(map, (size_t)(b->hole - map));
		if (b->hole + b->hole_len < end)
			munmap(b->hole + b->hole_len, (size_t)(end - b->hole - b->hole_len));
	} else if (map) {
		munmap(map, b->map_len);
	}
	free(b->mirror);
	free(b);
}

/*
 * The kernel's huge-page buffers: times PMD sizes of private anonymous
 * memory, and in it the first PMD-aligned PMD-sized region, given the
 * advice (MADV_HUGEPAGE or MADV_NOHUGEPAGE); the commands use that region.
 */
static struct buffer *buffer_new_pmd(int prot, int advice, unsigned times)
{
	size_t pmd = thp_pmd_size();
	char *raw = mmap(NULL, times * pmd, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p;

	cr_assert_neq(raw, MAP_FAILED, "mmap: %s", strerror(errno));
	p = (char *)(((uintptr_t)raw + pmd - 1) & ~(uintptr_t)(pmd - 1));
	cr_assert_eq(madvise(p, pmd, advice), 0, "madvise: %s", strerror(errno));
	return buffer_around(p, pmd / PS, raw, times * pmd);
}

/* The kernel's hugetlb buffers: 2 MiB rounded up to the huge page size, or a skip. */
static struct buffer *buffer_new_hugetlb(void)
{
	size_t hsize = meminfo_field("Hugepagesize:") * 1024, len;
	void *p;

	if (!hsize || !meminfo_field("HugePages_Free:"))
		cr_skip_test("no free huge page: /proc/sys/vm/nr_hugepages has none to give");
	len = (2 * ONE_MIB + hsize - 1) / hsize * hsize;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		 -1, 0);
	if (p == MAP_FAILED)
		cr_skip_test("no huge page could be mapped: %s", strerror(errno));
	return buffer_around(p, len / PS, p, len);
}

/* ------------------------------------------------------------ data */

/* Ints [from, to) of p become sign * i + plus. */
static void fill_ints(void *p, size_t from, size_t to, int sign, int plus)
{
	for (size_t i = from; i < to; i++)
		((int *)p)[i] = sign * (int)i + plus;
}

/* The first of ints [from, to) of p that is not sign * i + plus, or -1. */
static long ints_mismatch(const void *p, size_t from, size_t to, int sign, int plus)
{
	for (size_t i = from; i < to; i++)
		if (((const int *)p)[i] != sign * (int)i + plus)
			return (long)i;
	return -1;
}

static void expect_ints(const void *p, size_t from, size_t to, int sign, int plus,
			const char *what)
{
	long i = ints_mismatch(p, from, to, sign, plus);

	if (i >= 0)
		cr_assert_fail("%s: int %ld is %d, not %d", what, i, ((const int *)p)[i],
			       sign * (int)i + plus);
}

/* All npages pages of p hold ints i (sign 1) or -i (sign -1). */
static void fill_index(void *p, size_t npages, int sign)
{
	fill_ints(p, 0, INTS(npages * PS), sign, 0);
}

static void expect_index(const void *p, size_t npages, int sign, const char *what)
{
	expect_ints(p, 0, INTS(npages * PS), sign, 0, what);
}

static void expect_zeros(const void *p, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (((const unsigned char *)p)[i])
			cr_assert_fail("%s: byte %zu is %#x, not 0", what, i,
				       ((const unsigned char *)p)[i]);
}

/* ------------------------------------------------------------ commands */

/* MIGRATE_TO_DEV of npages of b that must move them all. */
static void migrate_all(int fd, struct buffer *b, size_t npages)
{
	int err = dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, npages);

	cr_assert_eq(err, 0, "MIGRATE_TO_DEV: %s", strerror(-err));
	cr_assert_eq(b->cpages, npages, "MIGRATE_TO_DEV moved %llu pages, not %zu",
		     (unsigned long long)b->cpages, npages);
}

/* READ or WRITE of npages of b that must succeed in one fault round. */
static void access_in_one_round(int fd, unsigned long request, struct buffer *b, size_t npages)
{
	const char *what = request == HMM_DMIRROR_READ ? "READ" : "WRITE";
	int err = dcmd(fd, request, b, npages);

	cr_assert_eq(err, 0, "%s: %s", what, strerror(-err));
	cr_assert_eq(b->cpages, npages, "%s: cpages %llu, not %zu", what,
		     (unsigned long long)b->cpages, npages);
	cr_assert_eq(b->faults, 1, "%s: %llu fault rounds, not 1", what,
		     (unsigned long long)b->faults);
}

/* SNAPSHOT of npages from ptr by fd into bytes (npages of them). */
static void snapshot(int fd, void *ptr, size_t npages, unsigned char *bytes)
{
	struct buffer s = { .ptr = ptr, .mirror = bytes, .npages = npages };
	int err = dcmd(fd, HMM_DMIRROR_SNAPSHOT, &s, npages);

	cr_assert_eq(err, 0, "SNAPSHOT: %s", strerror(-err));
	cr_assert_eq(s.cpages, npages, "SNAPSHOT: cpages %llu, not %zu",
		     (unsigned long long)s.cpages, npages);
}

static void expect_byte(const unsigned char *bytes, size_t i, unsigned want)
{
	cr_assert_eq(bytes[i], want, "page %zu: snapshot byte %#x, not %#x", i, bytes[i], want);
}

/* The device of fd snapshots every one of npages pages from ptr as want. */
static void expect_snapshot_all(int fd, void *ptr, size_t npages, unsigned want)
{
	unsigned char *bytes = malloc(npages);

	cr_assert(bytes);
	snapshot(fd, ptr, npages, bytes);
	for (size_t i = 0; i < npages; i++)
		expect_byte(bytes, i, want);
	free(bytes);
}

/* All of b gets ints i, moves to the device of fd, and reads back from it right. */
static void fill_and_migrate(int fd, struct buffer *b)
{
	fill_index(b->ptr, b->npages, 1);
	migrate_all(fd, b, b->npages);
	expect_index(b->mirror, b->npages, 1, "the device's copy");
}

/* In a fork child, where Criterion's assertions do not reach the parent. */
#define CHILD_EXPECT(cond, status) \
	do { \
		if (!(cond)) \
			_exit(status); \
	} while (0)

static void expect_child_exited_well(pid_t pid)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child ended with status %#x (exit code: the failed check)", status);
}

TestSuite(dmirror, .timeout = 240);

/* ------------------------------------------------------------ scenarios */

/* open_close, and the driver's devices are 0 to 3 only */
Test(dmirror, every_device_opens_and_closes_and_others_do_not_exist)
{
	for (unsigned n = 0; n < 4; n++)
		cr_assert_eq(close(dmirror_open(n)), 0);
	cr_assert_eq(open("/dev/hmm_dmirror4", O_RDWR), -1);
	cr_assert_eq(errno, ENOENT);
}

/* open_close */
static void devices_open_and_close(unsigned first)
{
	struct devices d = devices_open(first, 2);

	devices_close(&d);
}
BOTH_VARIANTS(devices_open_and_close, the_fixtures_devices_open_and_close)

/* anon_read */
static void device_reads_anonymous_memory(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	volatile int *second = (int *)((char *)b->ptr + PS);

	/* Page 0 stays untouched, page 1 becomes the zero page. */
	fill_ints(b->ptr, INTS(2 * PS), INTS(NPAGES * PS), 1, 0);
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_READ), 0);
	cr_assert_eq(*second, 0);
	access_in_one_round(d.fd[0], HMM_DMIRROR_READ, b, NPAGES);
	expect_zeros(b->mirror, 2 * PS, "the untouched page and the zero page");
	expect_ints(b->mirror, INTS(2 * PS), INTS(NPAGES * PS), 1, 0, "the rest");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(device_reads_anonymous_memory,
	      a_device_reads_untouched_zero_and_written_pages_in_one_fault_round)

/* anon_read: the second read finds every page in the device's page table */
Test(dmirror, a_second_read_needs_no_fault)
{
	int fd = dmirror_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES, 1);
	access_in_one_round(fd, HMM_DMIRROR_READ, b, NPAGES);
	memset(b->mirror, 0, NPAGES * PS);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, NPAGES), 0);
	cr_assert_eq(b->faults, 0);
	expect_index(b->mirror, NPAGES, 1, "second read");
	buffer_free(b);
	close(fd);
}

/* anon_read_prot */
static void device_read_of_prot_none_fails(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES, 1);
	fill_index(b->mirror, NPAGES, -1);
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_NONE), 0);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_READ, b, NPAGES), -EFAULT);
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_READ), 0);
	expect_index(b->ptr, NPAGES, 1, "the memory itself");
	expect_index(b->mirror, NPAGES, -1, "the device's buffer, untouched");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(device_read_of_prot_none_fails,
	      reading_prot_none_memory_is_efault_and_reads_nothing)

/* anon_write */
static void device_writes_anonymous_memory(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->mirror, NPAGES, 1);
	access_in_one_round(d.fd[0], HMM_DMIRROR_WRITE, b, NPAGES);
	expect_index(b->ptr, NPAGES, 1, "what the CPU reads");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(device_writes_anonymous_memory, a_device_writes_fresh_memory_in_one_fault_round)

/* anon_write_prot */
static void device_write_of_read_only_fails(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ, MAP_PRIVATE);

	access_in_one_round(d.fd[0], HMM_DMIRROR_READ, b, 1);
	expect_zeros(b->mirror, PS, "the zero page");
	fill_index(b->mirror, NPAGES, 1);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_WRITE, b, NPAGES), -EPERM);
	expect_zeros(b->ptr, NPAGES * PS, "the memory after the refused write");
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_READ | PROT_WRITE), 0);
	access_in_one_round(d.fd[0], HMM_DMIRROR_WRITE, b, NPAGES);
	expect_index(b->ptr, NPAGES, 1, "after the write");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(device_write_of_read_only_fails,
	      a_write_to_read_only_memory_is_eperm_and_works_after_mprotect)

/*
 * anon_write_child, one of its four rounds: the parent has ints i (and,
 * with migrate, moved them to its device first); a fork child sees them,
 * and writes ints -i through device 0, which it opens itself; the parent's
 * memory is unchanged.  Besides the kernel's checks, the child finds the
 * inherited descriptor answering ENODEV (libhmm_dmirror(7) BUGS).
 */
static void child_writes_through_its_own_device(unsigned first, bool migrate, bool thp)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = thp ? buffer_new_pmd(PROT_READ | PROT_WRITE, MADV_HUGEPAGE, 2)
			       : buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	size_t n = b->npages;
	pid_t pid;

	fill_index(b->ptr, n, 1);
	fill_index(b->mirror, n, -1);
	if (migrate)
		migrate_all(d.fd[0], b, n);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int cfd;

		CHILD_EXPECT(ints_mismatch(b->ptr, 0, INTS(n * PS), 1, 0) < 0, 2);
		if (!migrate)
			CHILD_EXPECT(ints_mismatch(b->mirror, 0, INTS(n * PS), -1, 0) < 0, 3);
		CHILD_EXPECT(dcmd(d.fd[0], HMM_DMIRROR_READ, b, n) == -ENODEV, 4);
		cfd = open("/dev/hmm_dmirror0", O_RDWR);
		CHILD_EXPECT(cfd >= 0, 5);
		CHILD_EXPECT(dcmd(cfd, HMM_DMIRROR_WRITE, b, n) == 0, 6);
		CHILD_EXPECT(b->cpages == n, 7);
		CHILD_EXPECT(b->faults == 1, 8);
		if (!migrate)
			CHILD_EXPECT(ints_mismatch(b->ptr, 0, INTS(n * PS), -1, 0) < 0, 9);
		close(cfd);
		_exit(0);
	}
	expect_child_exited_well(pid);
	expect_index(b->ptr, n, 1, "the parent's memory");
	buffer_free(b);
	devices_close(&d);
}

static void child_writes_small_pages(unsigned first)
{
	child_writes_through_its_own_device(first, false, false);
}
BOTH_VARIANTS(child_writes_small_pages,
	      a_fork_childs_device_write_copies_on_write_and_the_parent_keeps_its_data)

static void child_writes_thp(unsigned first)
{
	child_writes_through_its_own_device(first, false, true);
}
BOTH_VARIANTS(child_writes_thp, a_fork_childs_device_write_to_a_thp_leaves_the_parent_its_data)

static void child_writes_migrated_pages(unsigned first)
{
	child_writes_through_its_own_device(first, true, false);
}
BOTH_VARIANTS(child_writes_migrated_pages,
	      a_fork_child_reads_and_writes_pages_the_parent_moved_and_the_parent_keeps_them)

static void child_writes_migrated_thp(unsigned first)
{
	child_writes_through_its_own_device(first, true, true);
}
BOTH_VARIANTS(child_writes_migrated_thp,
	      a_fork_child_reads_and_writes_a_thp_the_parent_moved_and_the_parent_keeps_it)

/* anon_write_child_shared */
static void child_writes_shared_memory(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_SHARED);
	pid_t pid;

	fill_index(b->ptr, NPAGES, 1);
	fill_index(b->mirror, NPAGES, -1);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int cfd;

		CHILD_EXPECT(ints_mismatch(b->ptr, 0, INTS(NPAGES * PS), 1, 0) < 0, 2);
		CHILD_EXPECT(ints_mismatch(b->mirror, 0, INTS(NPAGES * PS), -1, 0) < 0, 3);
		cfd = open("/dev/hmm_dmirror0", O_RDWR);
		CHILD_EXPECT(cfd >= 0, 5);
		CHILD_EXPECT(dcmd(cfd, HMM_DMIRROR_WRITE, b, NPAGES) == 0, 6);
		CHILD_EXPECT(b->cpages == NPAGES, 7);
		CHILD_EXPECT(b->faults == 1, 8);
		CHILD_EXPECT(ints_mismatch(b->ptr, 0, INTS(NPAGES * PS), -1, 0) < 0, 9);
		close(cfd);
		_exit(0);
	}
	expect_child_exited_well(pid);
	expect_index(b->ptr, NPAGES, -1, "the parent's view of the shared memory");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(child_writes_shared_memory,
	      a_fork_childs_device_write_to_shared_memory_reaches_the_parent)

/* anon_write_huge */
static void device_writes_thp(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_pmd(PROT_READ | PROT_WRITE, MADV_HUGEPAGE, 2);

	fill_index(b->mirror, b->npages, 1);
	access_in_one_round(d.fd[0], HMM_DMIRROR_WRITE, b, b->npages);
	expect_index(b->ptr, b->npages, 1, "what the CPU reads");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(device_writes_thp, a_device_writes_an_aligned_thp_region_in_one_fault_round)

/* anon_write_hugetlbfs */
static void device_writes_hugetlb(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_hugetlb();

	fill_index(b->mirror, b->npages, 1);
	access_in_one_round(d.fd[0], HMM_DMIRROR_WRITE, b, b->npages);
	expect_index(b->ptr, b->npages, 1, "what the CPU reads");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(device_writes_hugetlb, a_device_writes_hugetlb_memory_in_one_fault_round)

/* An unnamed file in /tmp of NPAGES pages, gone when closed, mapped shared with prot. */
static struct buffer *buffer_new_file(int prot, int *fd)
{
	void *p;

	*fd = open("/tmp", O_TMPFILE | O_EXCL | O_RDWR, 0600);
	cr_assert_geq(*fd, 0, "O_TMPFILE in /tmp: %s", strerror(errno));
	cr_assert_eq(ftruncate(*fd, (off_t)(NPAGES * PS)), 0);
	p = mmap(NULL, NPAGES * PS, prot, MAP_SHARED, *fd, 0);
	cr_assert_neq(p, MAP_FAILED, "mmap of the file: %s", strerror(errno));
	return buffer_around(p, NPAGES, p, NPAGES * PS);
}

/* file_read */
static void device_reads_file(unsigned first)
{
	struct devices d = devices_open(first, 1);
	int fd;
	struct buffer *b = buffer_new_file(PROT_READ, &fd);

	fill_index(b->mirror, NPAGES, 1);
	cr_assert_eq(pwrite(fd, b->mirror, NPAGES * PS, 0), (ssize_t)(NPAGES * PS));
	memset(b->mirror, 0, NPAGES * PS);
	access_in_one_round(d.fd[0], HMM_DMIRROR_READ, b, NPAGES);
	expect_index(b->mirror, NPAGES, 1, "what the device read");
	buffer_free(b);
	close(fd);
	devices_close(&d);
}
BOTH_VARIANTS(device_reads_file, a_device_reads_a_shared_file_mapping_in_one_fault_round)

/* file_write */
static void device_writes_file(unsigned first)
{
	struct devices d = devices_open(first, 1);
	int fd;
	struct buffer *b = buffer_new_file(PROT_READ | PROT_WRITE, &fd);

	fill_index(b->mirror, NPAGES, 1);
	access_in_one_round(d.fd[0], HMM_DMIRROR_WRITE, b, NPAGES);
	expect_index(b->ptr, NPAGES, 1, "what the CPU reads");
	memset(b->mirror, 0, NPAGES * PS);
	cr_assert_eq(pread(fd, b->mirror, NPAGES * PS, 0), (ssize_t)(NPAGES * PS));
	expect_index(b->mirror, NPAGES, 1, "what read(2) of the file gives");
	buffer_free(b);
	close(fd);
	devices_close(&d);
}
BOTH_VARIANTS(device_writes_file,
	      a_device_writes_a_shared_file_mapping_and_the_file_holds_the_data)

/* migrate */
static void migration_moves_pages(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_and_migrate(d.fd[0], b);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(migration_moves_pages, migration_moves_every_page_to_the_device)

/* migrate, and a snapshot of the moved pages, and MIGRATE_TO_SYS */
static void migration_there_and_back(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned local = d.coherent ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL
				    : HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;

	fill_index(b->ptr, NPAGES, 1);
	migrate_all(d.fd[0], b, NPAGES);
	expect_snapshot_all(d.fd[0], b->ptr, NPAGES, local | HMM_DMIRROR_PROT_WRITE);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_MIGRATE_TO_SYS, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	expect_snapshot_all(d.fd[0], b->ptr, NPAGES, HMM_DMIRROR_PROT_WRITE);
	expect_index(b->ptr, NPAGES, 1, "back in host RAM");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(migration_there_and_back,
	      moved_pages_snapshot_as_the_devices_own_and_migrate_back_to_host_ram)

/* migrate_fault */
static void migration_after_cpu_faults(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_and_migrate(d.fd[0], b);
	expect_index(b->ptr, NPAGES / 2, 1, "the CPU's read of the first half");
	migrate_all(d.fd[0], b, NPAGES);
	expect_index(b->mirror, NPAGES, 1, "the device's copy after the second migration");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(migration_after_cpu_faults,
	      pages_a_cpu_read_brought_back_migrate_again_with_those_still_on_the_device)

/*
 * migrate_release.  Besides the kernel's check (the CPU reads the data),
 * the snapshot shows every page back in host RAM.
 */
static void release_brings_pages_back(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_and_migrate(d.fd[0], b);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_RELEASE, b, NPAGES), 0);
	expect_snapshot_all(d.fd[0], b->ptr, NPAGES, HMM_DMIRROR_PROT_WRITE);
	expect_index(b->ptr, NPAGES / 2, 1, "after RELEASE");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(release_brings_pages_back, release_brings_every_device_page_back_to_host_ram)

/*
 * The driver's release (close of a descriptor) evicts every page of its
 * device, whichever descriptor migrated it; another device's pages stay.
 */
static void close_brings_pages_back(unsigned first)
{
	struct devices d = devices_open(first, 2);
	int again = dmirror_open(first);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct buffer *o = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned other = first == 2 ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL
				    : HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;

	fill_and_migrate(d.fd[0], b);
	fill_and_migrate(d.fd[1], o);
	cr_assert_eq(close(again), 0);
	expect_snapshot_all(d.fd[0], b->ptr, NPAGES, HMM_DMIRROR_PROT_WRITE);
	expect_snapshot_all(d.fd[1], o->ptr, NPAGES, other | HMM_DMIRROR_PROT_WRITE);
	expect_index(b->ptr, NPAGES, 1, "after the close");
	buffer_free(o);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(close_brings_pages_back, closing_a_descriptor_brings_its_devices_pages_back)

/* migrate_shared */
static void shared_memory_does_not_migrate(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_SHARED);

	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_MIGRATE_TO_DEV, b, NPAGES), -ENOENT);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(shared_memory_does_not_migrate, shared_anonymous_memory_does_not_migrate)

/*
 * Pages of b, reserved PROT_NONE, become: 0 still PROT_NONE, 1 a hole, 2
 * the read-only zero page, 3 read-only with data, 4 and on writable, with
 * data in page 4; the data is the int 3.
 */
static void make_kinds_of_pages(struct buffer *b, bool hole)
{
	char *p = b->ptr;
	int val;

	if (hole)
		buffer_punch(b, p + PS, PS);
	cr_assert_eq(mprotect(p + 2 * PS, PS, PROT_READ), 0);
	val = *(volatile int *)(p + 2 * PS) + 3;
	cr_assert_eq(val, 3);
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ | PROT_WRITE), 0);
	*(int *)(p + 3 * PS) = val;
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ), 0);
	cr_assert_eq(mprotect(p + 4 * PS, (b->npages - 4) * PS, PROT_READ | PROT_WRITE), 0);
	*(int *)(p + 4 * PS) = val;
}

/*
 * migrate_mixed.  Besides the kernel's checks, the device's copies of
 * pages 2 to 5 are checked.
 */
static void migration_of_mixed_pages(unsigned first)
{
	struct devices d = devices_open(first, 2);
	struct buffer *b = buffer_new(6, PROT_NONE, MAP_PRIVATE);
	char *p = b->ptr;

	cr_assert_eq(dcmd(d.fd[1], HMM_DMIRROR_MIGRATE_TO_DEV, b, 6), -EINVAL,
		     "PROT_NONE memory cannot move");
	make_kinds_of_pages(b, true);
	*(int *)(p + 5 * PS) = 3;
	cr_assert_eq(dcmd(d.fd[1], HMM_DMIRROR_MIGRATE_TO_DEV, b, 3), -EINVAL,
		     "the range has a hole");
	b->ptr = p + 2 * PS;
	migrate_all(d.fd[1], b, 4);
	expect_zeros(b->mirror, PS, "the device's copy of the zero page");
	for (int i = 1; i < 4; i++)
		cr_assert_eq(*(int *)((char *)b->mirror + i * PS), 3, "page %d's copy", 2 + i);
	b->ptr = p + 5 * PS;
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_MIGRATE_TO_DEV, b, 1), -ENOENT,
		     "a page on device 1 does not move to device 0");
	b->ptr = p;
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(migration_of_mixed_pages,
	      migration_refuses_holes_and_prot_none_moves_read_only_and_zero_pages_not_anothers)

/* migrate_multiple */
static void migration_many_times(unsigned first)
{
	struct devices d = devices_open(first, 1);

	for (int c = 0; c < NTIMES; c++) {
		struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

		fill_and_migrate(d.fd[0], b);
		/* The kernel's coherent pages stay mapped: they come back by command. */
		if (d.coherent) {
			cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_MIGRATE_TO_SYS, b, NPAGES), 0);
			cr_assert_eq(b->cpages, NPAGES);
		}
		expect_index(b->ptr, NPAGES, 1, "back in host RAM");
		buffer_free(b);
	}
	devices_close(&d);
}
BOTH_VARIANTS(migration_many_times, ten_buffers_migrate_and_come_back_whole)

/* anon_read_multiple */
static void reads_many_times(unsigned first)
{
	struct devices d = devices_open(first, 1);

	for (int c = 0; c < NTIMES; c++) {
		struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

		fill_ints(b->ptr, 0, INTS(NPAGES * PS), 1, c);
		access_in_one_round(d.fd[0], HMM_DMIRROR_READ, b, NPAGES);
		expect_ints(b->mirror, 0, INTS(NPAGES * PS), 1, c, "what the device read");
		buffer_free(b);
	}
	devices_close(&d);
}
BOTH_VARIANTS(reads_many_times, ten_fresh_buffers_read_in_one_fault_round_each)

struct unmapper {
	char *p;
	long delay_ns;
};

static void *unmap_second_half(void *arg)
{
	struct unmapper *u = arg;
	struct timespec t = { 0, u->delay_ns };

	nanosleep(&t, NULL);
	if (munmap(u->p + NPAGES * PS / 2, NPAGES * PS / 2))
		abort();
	return NULL;
}

/* anon_teardown.  Besides the kernel's checks, a read that fails fails with EFAULT. */
static void read_races_munmap(unsigned first)
{
	struct devices d = devices_open(first, 1);
	unsigned seed = (unsigned)time(NULL);

	cr_log_info("anon_teardown: seed %u", seed);
	for (int c = 0; c < NTIMES; c++) {
		struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
		struct unmapper u = { b->ptr, rand_r(&seed) % 32000 };
		pthread_t t;
		int err;

		fill_ints(b->ptr, 0, INTS(NPAGES * PS), 1, c);
		cr_assert_eq(pthread_create(&t, NULL, unmap_second_half, &u), 0);
		err = dcmd(d.fd[0], HMM_DMIRROR_READ, b, NPAGES);
		if (!err) {
			cr_assert_eq(b->cpages, NPAGES);
			cr_assert_eq(b->faults, 1);
			expect_ints(b->mirror, 0, INTS(NPAGES * PS), 1, c, "a read that won");
		} else {
			cr_assert_eq(err, -EFAULT, "round %d: %s", c, strerror(-err));
		}
		pthread_join(t, NULL);
		b->map_len = NPAGES * PS / 2;
		buffer_free(b);
	}
	devices_close(&d);
}
BOTH_VARIANTS(read_races_munmap, a_read_racing_munmap_reads_the_data_or_fails_with_efault)

/* mixedmap */
static void device_file_mapping_is_present(unsigned first)
{
	struct devices d = devices_open(first, 1);
	unsigned char byte = 0xee;
	void *p = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, d.fd[0], 0);

	cr_assert_neq(p, MAP_FAILED, "mmap of the device: %s", strerror(errno));
	snapshot(d.fd[0], p, 1, &byte);
	expect_byte(&byte, 0, HMM_DMIRROR_PROT_READ);
	cr_assert_eq(*(unsigned char *)p, 0, "fresh pages are zeros");
	munmap(p, PS);
	devices_close(&d);
}
BOTH_VARIANTS(device_file_mapping_is_present,
	      the_device_files_mapping_is_present_and_read_only_until_written)

/*
 * snapshot: seven pages, 0 to 4 as make_kinds_of_pages makes them, 5 moved
 * to the first device and 6 to the second; the first device's snapshot.
 * The coherent variant differs from the kernel's (see the top): page 6 is
 * PROT_NONE, as libhmm_dmirror(7) BUGS says, not DEV_COHERENT_REMOTE | WRITE.
 */
static void snapshot_of_every_kind(unsigned first)
{
	struct devices d = devices_open(first, 2);
	struct buffer *b = buffer_new(7, PROT_NONE, MAP_PRIVATE);
	unsigned char *p = b->ptr, m[7];

	make_kinds_of_pages(b, false);

	b->ptr = p + 5 * PS;
	migrate_all(d.fd[0], b, 1);
	b->ptr = p + 6 * PS;
	migrate_all(d.fd[1], b, 1);
	b->ptr = p;
	/* The hole last (the kernel's test makes it first): a hole is free
	 * address space, and the migrations' allocations in this process
	 * (libhmm's, a sanitizer's) could take it meanwhile. */
	buffer_punch(b, p + PS, PS);
	snapshot(d.fd[0], p, 7, m);
	cr_assert(mincore(p + PS, PS, &(unsigned char){ 0 }) == -1 && errno == ENOMEM,
		  "something mapped the hole during the snapshot: no conclusion");
	expect_byte(m, 0, HMM_DMIRROR_PROT_ERROR);
	expect_byte(m, 1, HMM_DMIRROR_PROT_ERROR);
	expect_byte(m, 2, HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
	expect_byte(m, 3, HMM_DMIRROR_PROT_READ);
	expect_byte(m, 4, HMM_DMIRROR_PROT_WRITE);
	if (!d.coherent) {
		expect_byte(m, 5, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
		expect_byte(m, 6, HMM_DMIRROR_PROT_NONE);
	} else {
		expect_byte(m, 5, HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL | HMM_DMIRROR_PROT_WRITE);
		expect_byte(m, 6, HMM_DMIRROR_PROT_NONE); /* the kernel: COHERENT_REMOTE | WRITE */
	}
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(snapshot_of_every_kind,
	      a_snapshot_tells_errors_zero_read_only_writable_local_and_remote_pages_apart)

/* compound */
static void snapshot_of_hugetlb(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_hugetlb();

	fill_index(b->ptr, b->npages, 1);
	expect_snapshot_all(d.fd[0], b->ptr, b->npages, HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD);
	cr_assert_eq(mprotect(b->ptr, b->npages * PS, PROT_READ), 0);
	expect_snapshot_all(d.fd[0], b->ptr, b->npages, HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(snapshot_of_hugetlb, a_snapshot_of_hugetlb_memory_says_pmd)

/* double_map */
static void two_devices_read(unsigned first)
{
	struct devices d = devices_open(first, 2);
	struct buffer *b = buffer_new(6, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, 6, 1);
	cr_assert_eq(mprotect(b->ptr, 6 * PS, PROT_READ), 0);
	access_in_one_round(d.fd[0], HMM_DMIRROR_READ, b, 6);
	expect_index(b->mirror, 6, 1, "what device 0 read");
	memset(b->mirror, 0, 6 * PS);
	access_in_one_round(d.fd[1], HMM_DMIRROR_READ, b, 6);
	expect_index(b->mirror, 6, 1, "what device 1 read");
	migrate_all(d.fd[1], b, 6);
	memset(b->mirror, 0, 6 * PS);
	access_in_one_round(d.fd[0], HMM_DMIRROR_READ, b, 6);
	expect_index(b->mirror, 6, 1, "what device 0 read of pages on device 1");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(two_devices_read,
	      two_devices_read_the_same_read_only_pages_and_after_one_moved_them)

/* exclusive.  Besides the kernel's checks, the pages are held until the CPU writes. */
static void exclusive_until_cpu_access(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *p = b->ptr;

	fill_index(b->ptr, NPAGES, 1);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_EXCLUSIVE, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	expect_index(b->mirror, NPAGES, 1, "what the device read");
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_CHECK_EXCLUSIVE, b, NPAGES), -EPERM,
		     "still held by the device");
	for (size_t i = 0; i < INTS(NPAGES * PS); i++)
		cr_assert_eq(p[i]++, (int)i, "int %zu", i);
	expect_ints(p, 0, INTS(NPAGES * PS), 1, 1, "after the CPU's increments");
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_CHECK_EXCLUSIVE, b, NPAGES), 0);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(exclusive_until_cpu_access, exclusive_pages_return_to_the_cpu_when_it_writes)

/* exclusive_mprotect */
static void exclusive_then_mprotect(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES, 1);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_EXCLUSIVE, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	expect_index(b->mirror, NPAGES, 1, "what the device read");
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_READ), 0);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_WRITE, b, NPAGES), -EPERM);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(exclusive_then_mprotect, a_write_to_exclusive_pages_made_read_only_is_eperm)

/* exclusive_cow: parent and child each increment their copy after fork */
static void exclusive_then_fork(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *p = b->ptr;
	bool wrong = false;
	pid_t pid;

	fill_index(b->ptr, NPAGES, 1);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_EXCLUSIVE, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	pid = fork();
	cr_assert_geq(pid, 0);
	for (size_t i = 0; i < INTS(NPAGES * PS); i++)
		wrong |= p[i]++ != (int)i;
	wrong |= ints_mismatch(p, 0, INTS(NPAGES * PS), 1, 1) >= 0;
	if (pid == 0)
		_exit(wrong ? 2 : 0);
	cr_assert(!wrong, "the parent's increments");
	expect_child_exited_well(pid);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(exclusive_then_fork, after_fork_exclusive_pages_copy_on_write_in_both)

/* hmm_cow_in_device */
static void cow_of_device_pages(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new(4, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int status;
	pid_t pid;

	fill_index(b->ptr, 4, 1);
	migrate_all(d.fd[0], b, 4);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		for (;;)
			pause();
	fill_index(b->ptr, 4, 1);
	cr_assert_eq(kill(pid, SIGTERM), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %#x", status);
	expect_snapshot_all(d.fd[0], b->ptr, 4, HMM_DMIRROR_PROT_WRITE);
	expect_index(b->ptr, 4, 1, "the parent's copy");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(cow_of_device_pages,
	      a_write_to_device_pages_shared_with_a_child_gives_the_parent_host_pages)

/* migrate_anon_huge_empty */
static void migrate_empty_pmd(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_pmd(PROT_READ, MADV_HUGEPAGE, 2);

	migrate_all(d.fd[0], b, b->npages);
	expect_zeros(b->mirror, b->npages * PS, "the device's copy");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(migrate_empty_pmd, an_untouched_thp_region_migrates_as_zeros)

/* migrate_anon_huge_zero */
static void migrate_huge_zero_page(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_pmd(PROT_READ, MADV_HUGEPAGE, 2);

	cr_assert_eq(*(volatile int *)b->ptr, 0);
	migrate_all(d.fd[0], b, b->npages);
	expect_zeros(b->mirror, b->npages * PS, "the device's copy");
	expect_zeros(b->ptr, b->npages * PS, "what the CPU reads back");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(migrate_huge_zero_page, the_huge_zero_page_migrates_and_reads_back_as_zeros)

/* migrate_anon_huge_free (madv_free) and migrate_anon_huge_fault (!madv_free) */
static void migrate_thp_then(unsigned first, bool madv_free)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_pmd(PROT_READ | PROT_WRITE, MADV_HUGEPAGE, 2);

	fill_and_migrate(d.fd[0], b);
	if (madv_free)
		cr_assert_eq(madvise(b->ptr, b->npages * PS, MADV_FREE), 0, "MADV_FREE: %s",
			     strerror(errno));
	else
		expect_index(b->ptr, b->npages, 1, "what the CPU reads back");
	buffer_free(b);
	devices_close(&d);
}

static void migrate_thp_then_free(unsigned first)
{
	migrate_thp_then(first, true);
}
BOTH_VARIANTS(migrate_thp_then_free, a_migrated_thp_can_be_madv_freed)

static void migrate_thp_then_fault(unsigned first)
{
	migrate_thp_then(first, false);
}
BOTH_VARIANTS(migrate_thp_then_fault, a_migrated_thp_reads_back_whole)

/* migrate_partial_unmap_fault */
static void migrate_then_unmap_part(unsigned first)
{
	struct devices d = devices_open(first, 1);
	const size_t offsets[] = { 0, ONE_MIB / 2, ONE_MIB };

	for (int thp = 0; thp < 2; thp++) {
		for (size_t j = 0; j < sizeof(offsets) / sizeof(offsets[0]); j++) {
			struct buffer *b = buffer_new_pmd(PROT_READ | PROT_WRITE,
							  thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE, 2);
			size_t all = INTS(b->npages * PS);

			fill_and_migrate(d.fd[0], b);
			buffer_punch(b, (char *)b->ptr + offsets[j], ONE_MIB);
			expect_ints(b->ptr, 0, INTS(offsets[j]), 1, 0, "before the hole");
			expect_ints(b->ptr, INTS(offsets[j] + ONE_MIB), all, 1, 0, "after the hole");
			buffer_free(b);
		}
	}
	devices_close(&d);
}
BOTH_VARIANTS(migrate_then_unmap_part,
	      after_unmapping_a_mib_of_a_migrated_pmd_region_the_rest_reads_back)

/* migrate_remap_fault, one round: mremap before or after the migration. */
static void remap_round(int fd, bool before, bool dont_unmap, bool thp, size_t offset)
{
	struct buffer *b = buffer_new_pmd(PROT_READ | PROT_WRITE,
					  thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE, 8);
	size_t size = b->npages * PS;
	char *map = b->ptr, *moved = NULL;
	int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dont_unmap ? MREMAP_DONTUNMAP : 0);

	/* The kernel's test unmaps the target first.  Here the target stays
	 * mapped, ours, until MREMAP_FIXED replaces it: unmapped, it is free
	 * address space that this process's allocators (the shim's, libhmm's,
	 * a sanitizer's) may take meanwhile, and the mremap would then
	 * replace their memory. */
	fill_index(map, b->npages, 1);
	if (before) {
		moved = mremap(map, size, size, flags, map + size + offset);
		cr_assert_neq(moved, MAP_FAILED, "mremap: %s", strerror(errno));
		b->ptr = moved;
	}
	migrate_all(fd, b, b->npages);
	expect_index(b->mirror, b->npages, 1, "the device's copy");
	if (!before) {
		moved = mremap(map, size, size, flags, map + size + offset);
		cr_assert_neq(moved, MAP_FAILED, "mremap: %s", strerror(errno));
	}
	expect_index(moved, b->npages, 1, "what the CPU reads at the new place");
	if (!dont_unmap) { /* the old place is a hole (see buffer_punch) */
		b->hole = map;
		b->hole_len = size;
	}
	buffer_free(b);
}

static void migrate_and_remap(unsigned first)
{
	struct devices d = devices_open(first, 1);
	const size_t offsets[] = { 0, ONE_MIB / 2, ONE_MIB };

	for (int before = 0; before < 2; before++)
		for (int dont_unmap = 0; dont_unmap < 2; dont_unmap++)
			for (int thp = 0; thp < 2; thp++)
				for (size_t j = 0; j < sizeof(offsets) / sizeof(offsets[0]); j++)
					remap_round(d.fd[0], before, dont_unmap, thp, offsets[j]);
	devices_close(&d);
}
BOTH_VARIANTS(migrate_and_remap,
	      pmd_regions_mremapped_before_or_after_migration_read_back_at_the_new_place)

/*
 * The premise of the FAIL_ALLOC huge-page scenarios: the CPU maps b with
 * one PMD of kind want (a THP, the huge zero page), or the test skips.
 */
static void premise_pmd(int fd, struct buffer *b, unsigned want)
{
	unsigned char byte;

	snapshot(fd, b->ptr, 1, &byte);
	if (byte != (want | HMM_DMIRROR_PROT_PMD))
		cr_skip_test("no transparent huge page here (snapshot byte %#x, not %#x): see "
			     "/sys/kernel/mm/transparent_hugepage", byte,
			     want | HMM_DMIRROR_PROT_PMD);
}

/* migrate_anon_huge_err */
static void thp_migration_with_failed_allocation(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_pmd(PROT_READ | PROT_WRITE, MADV_HUGEPAGE, 2);

	fill_index(b->ptr, b->npages, 1);
	premise_pmd(d.fd[0], b, HMM_DMIRROR_PROT_WRITE);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	migrate_all(d.fd[0], b, b->npages);
	expect_index(b->mirror, b->npages, 1, "the device's copy");
	cr_assert_eq(((volatile int *)b->ptr)[2048], 2048);
	buffer_free(b);

	b = buffer_new_pmd(PROT_READ | PROT_WRITE, MADV_HUGEPAGE, 2);
	fill_index(b->ptr, b->npages, 1);
	premise_pmd(d.fd[0], b, HMM_DMIRROR_PROT_WRITE);
	migrate_all(d.fd[0], b, b->npages);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_MIGRATE_TO_SYS, b, b->npages), 0);
	cr_assert_eq(b->cpages, b->npages);
	cr_assert_eq(((volatile int *)b->ptr)[2048], 2048);
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(thp_migration_with_failed_allocation,
	      a_thp_migrates_both_ways_when_its_huge_allocation_fails)

/* migrate_anon_huge_zero_err */
static void empty_pmd_migration_with_failed_allocation(unsigned first)
{
	struct devices d = devices_open(first, 1);
	struct buffer *b = buffer_new_pmd(PROT_READ, MADV_HUGEPAGE, 2);

	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	migrate_all(d.fd[0], b, b->npages);
	expect_zeros(b->mirror, b->npages * PS, "the device's copy");
	cr_assert_eq(((volatile int *)b->ptr)[2048], 0);
	buffer_free(b);

	b = buffer_new_pmd(PROT_READ, MADV_HUGEPAGE, 2);
	cr_assert_eq(*(volatile int *)b->ptr, 0);
	premise_pmd(d.fd[0], b, HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
	cr_assert_eq(dcmd(d.fd[0], HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	migrate_all(d.fd[0], b, b->npages);
	expect_zeros(b->ptr, b->npages * PS, "what the CPU reads back");
	buffer_free(b);
	devices_close(&d);
}
BOTH_VARIANTS(empty_pmd_migration_with_failed_allocation,
	      an_empty_or_huge_zero_pmd_migrates_when_its_huge_allocation_fails)

/*
 * The driver's FAIL_ALLOC on small pages: to the device, that page does
 * not move; back, the command fails with ENOMEM and nothing moves; once.
 */
Test(dmirror, fail_alloc_on_small_pages_fails_one_allocation_once_each_way)
{
	int fd = dmirror_open(0);
	struct buffer *b = buffer_new(8, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	cr_assert_eq(madvise(b->ptr, 8 * PS, MADV_NOHUGEPAGE), 0);
	fill_index(b->ptr, 8, 1);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, 8), -ENOENT,
		     "the page whose allocation failed stayed in host RAM");
	fill_and_migrate(fd, b);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, b, 8), -ENOMEM);
	expect_snapshot_all(fd, b->ptr, 8,
			    HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, b, 8), 0, "the flag was used up");
	cr_assert_eq(b->cpages, 8);
	expect_index(b->ptr, 8, 1, "the CPU's");
	buffer_free(b);
	close(fd);
}

/* The driver's argument checks. */
Test(dmirror, bad_commands_are_refused_and_change_nothing)
{
	int fd = dmirror_open(0);
	struct buffer *b = buffer_new(4, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct buffer odd = *b;

	odd.ptr = (char *)b->ptr + 1;
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, &odd, 1), -EINVAL, "unaligned addr");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, 0), -EINVAL, "no pages");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, UINT64_MAX / PS), -EINVAL, "wraps");
	cr_assert_eq(dcmd(fd, _IOWR('H', 0x3f, struct hmm_dmirror_cmd), b, 1), -EINVAL,
		     "unknown command");
	cr_assert_eq(ioctl(fd, HMM_DMIRROR_READ, (void *)8), -1);
	cr_assert_eq(errno, EFAULT, "the command itself unreadable");
	odd.ptr = b->ptr;
	odd.mirror = (void *)8;
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, &odd, 1), -EFAULT, "ptr unwritable");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_WRITE, &odd, 1), -EFAULT, "ptr unreadable");
	buffer_free(b);
	close(fd);
}
