/* SPDX-License-Identifier: MIT */
/*
 * test_conformance_access.c - the access scenarios of the Linux kernel's HMM
 * selftest (tools/testing/selftests/mm/hmm-tests.c, which drives the
 * kernel's test driver lib/test_hmm.c, "dmirror"), written against
 * libhmm's own API: a device reads and writes anonymous, shared, file and
 * huge memory at the CPU's addresses, is refused where the CPU would be,
 * copes with fork and with munmap racing its reads, snapshots the CPU's
 * page table, and holds pages exclusively for atomics.
 *
 * How the kernel's pieces map to libhmm's:
 *  - the "hmm" fixture (one open /dev/hmm_dmirror) is one embedded device
 *    with its mirror; "hmm2" is two devices of the same type.  Each
 *    fixture has a private variant (HMM_DEVICE_PRIVATE) and a coherent one
 *    (HMM_DEVICE_COHERENT), and every scenario below runs on both: one
 *    static function per scenario, and a private_ and a coherent_ Test().
 *  - HMM_DMIRROR_READ / _WRITE are hmm_mirror_read() / hmm_mirror_write();
 *    the driver's count of fault rounds (cmd.faults) is the growth of
 *    hmm_mirror_stats().faults over the call.  A successful call covers
 *    every page, which is the driver's cpages == npages.
 *  - HMM_DMIRROR_SNAPSHOT is hmm_range_fault() with no fault requested and
 *    the device as dev_private_owner, under a notifier of its own, as the
 *    driver does it; each word becomes one byte of SNAP_* flags below.  A
 *    page in device memory is one whose hmm_pfn_to_addr() is not its own
 *    CPU address (only the owner's device pages are reported at all).
 *  - HMM_DMIRROR_MIGRATE_TO_DEV is hmm_migrate_to_device().
 *  - HMM_DMIRROR_EXCLUSIVE is hmm_make_device_exclusive() followed by a
 *    device read of the range; HMM_DMIRROR_CHECK_EXCLUSIVE ("no page is
 *    still held for atomics") is hmm_mirror_check_exclusive() answering
 *    -EPERM for every page.
 *
 * The kernel's HMM_DMIRROR_PROT_ZERO is HMM_PFN_ZERO (the driver's
 * is_zero_pfn()).
 *
 * Where libhmm cannot say what the kernel checks:
 *  - snapshot on coherent devices: the kernel's coherent device memory stays
 *    mapped by the CPU, so another device sees a page on it as present, in
 *    place (DEV_COHERENT_REMOTE).  Anonymous memory migrated by libhmm has
 *    no CPU page whatever the device type, and another device sees it as
 *    absent (hmm_range_fault(3), NOTES), so that variant fails on page 6
 *    and is not registered; the scenario function keeps the kernel's
 *    expectation for it.  (double_map passes on coherent devices all the
 *    same: device 0 gets the data by bringing the page back, not in place.)
 *
 * Where this file does a little more or otherwise than the kernel's test:
 *  - in snapshot, pages 5 and 6 hold a marker before they move (the kernel
 *    moves them empty), so that the device address the snapshot gives can
 *    be checked to hold the page's data.
 *  - in anon_write_child(_shared) the child's device has the variant's
 *    type (the kernel's child always opens device 0, a private one).
 *  - anon_teardown runs 100 rounds, not 10, and half of them unmap later
 *    than the kernel's 0 to 32 us (see there).
 *  - snapshot makes its hole just before the snapshot, not first, and
 *    checks that it is still a hole after: address space left free is
 *    free for this process's allocators too, where the kernel driver
 *    allocates none.
 *
 * Left to other files: anon_write_child with migration first, and every
 * migration scenario of the kernel's test.
 */
#define _GNU_SOURCE
#include <hmm.h>

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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "snapshot.h"
#include "rng.h"

#define PS 4096UL
#define NPAGES 1024 /* HMM_BUFFER_SIZE: 4 MiB */
#define SIZE (NPAGES * PS)
#define NTIMES 10 /* the kernel's repetitions */
#define DEVICE_MEMORY (16UL << 20)

TestSuite(access, .timeout = 120);

/* ---- the fixtures: one or two devices of a type, each with its mirror ---- */

struct devs {
	unsigned n;
	struct hmm_device *dev[2];
	struct hmm_mirror *mir[2];
};

static void devs_open(struct devs *d, unsigned type, unsigned n)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = type,
					 .memory = DEVICE_MEMORY, .numa_node = -1 };

	memset(d, 0, sizeof(*d));
	d->n = n;
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(hmm_device_create(&cfg, &d->dev[i]), 0, "device %u", i);
		cr_assert_eq(hmm_mirror_create(d->dev[i], &d->mir[i]), 0, "mirror %u", i);
	}
}

static void devs_close(struct devs *d)
{
	for (unsigned i = 0; i < d->n; i++) {
		hmm_mirror_destroy(d->mir[i]);
		cr_assert_eq(hmm_device_destroy(d->dev[i]), 0, "device %u", i);
	}
}

/* ---- data: arrays of int, value sign * i + base at index i, as the kernel ---- */

static void fill_ints(void *p, size_t len, int sign, int base)
{
	int *v = p;

	for (size_t i = 0; i < len / sizeof(int); i++)
		v[i] = sign * (int)i + base;
}

/* The first index that does not hold its value, or -1. */
static long ints_mismatch(const void *p, size_t len, int sign, int base)
{
	const int *v = p;

	for (size_t i = 0; i < len / sizeof(int); i++)
		if (v[i] != sign * (int)i + base)
			return (long)i;
	return -1;
}

static void expect_ints(const void *p, size_t len, int sign, int base, const char *what)
{
	long i = ints_mismatch(p, len, sign, base);

	if (i >= 0)
		cr_assert_fail("%s: int %ld is %d, not %d", what, i, ((const int *)p)[i],
			       sign * (int)i + base);
}

static void expect_zero(const void *p, size_t len, const char *what)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i])
			cr_assert_fail("%s: byte %zu is 0x%02x, not 0", what, i, b[i]);
}

static void *map_anon(size_t len, int prot, int flags)
{
	void *p = mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
	return p;
}

static uint64_t va(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

/*
 * A scenario's setting, the kernel's fixture and hmm_buffer in one: the
 * devices, size bytes of anonymous memory at p, and the device's side of
 * the transfers (the driver's bounce buffer), mirror, as large.
 */
struct buffer {
	struct devs d;
	unsigned char *p;
	int *mirror;
	size_t size;
};

static void buffer_begin(struct buffer *b, unsigned type, unsigned ndevices, size_t size,
			 int prot, int flags)
{
	b->p = map_anon(size, prot, flags);
	b->mirror = malloc(size);
	cr_assert_not_null(b->mirror);
	b->size = size;
	devs_open(&b->d, type, ndevices);
}

static void buffer_end(struct buffer *b)
{
	devs_close(&b->d);
	free(b->mirror);
	munmap(b->p, b->size);
}

/* ---- the driver's commands ---------------------------------------------- */

static uint64_t faults(struct hmm_mirror *m)
{
	struct hmm_mirror_stats st;

	cr_assert_eq(hmm_mirror_stats(m, &st), 0);
	return st.faults;
}

/* HMM_DMIRROR_READ: the error, and the fault rounds it took in *rounds. */
static int dev_read(struct hmm_mirror *m, const void *p, void *buf, size_t len, uint64_t *rounds)
{
	uint64_t before = faults(m);
	int err = hmm_mirror_read(m, va(p), buf, len);

	*rounds = faults(m) - before;
	return err;
}

/* HMM_DMIRROR_WRITE, likewise. */
static int dev_write(struct hmm_mirror *m, void *p, const void *buf, size_t len, uint64_t *rounds)
{
	uint64_t before = faults(m);
	int err = hmm_mirror_write(m, va(p), buf, len);

	*rounds = faults(m) - before;
	return err;
}

static void expect_one_round(int err, uint64_t rounds, const char *what)
{
	cr_assert_eq(err, 0, "%s: %s", what, strerror(-err));
	cr_assert_eq(rounds, 1, "%s: %llu fault rounds, not 1", what, (unsigned long long)rounds);
}

/* A device read that must succeed in exactly one fault round. */
static void read_in_one_round(struct hmm_mirror *m, const void *p, void *buf, size_t len,
			      const char *what)
{
	uint64_t rounds;
	int err = dev_read(m, p, buf, len, &rounds);

	expect_one_round(err, rounds, what);
}

/* A device write that must succeed in exactly one fault round. */
static void write_in_one_round(struct hmm_mirror *m, void *p, const void *buf, size_t len,
			       const char *what)
{
	uint64_t rounds;
	int err = dev_write(m, p, buf, len, &rounds);

	expect_one_round(err, rounds, what);
}

static void to_device(struct hmm_device *d, void *p, size_t npages)
{
	uint64_t moved = 0;
	int err = hmm_migrate_to_device(d, p, npages * PS, &moved);

	cr_assert_eq(err, 0, "hmm_migrate_to_device: %s", strerror(-err));
	cr_assert_eq(moved, npages, "moved %llu pages, not %zu", (unsigned long long)moved,
		     npages);
}

/* ---- HMM_DMIRROR_SNAPSHOT ------------------------------------------------ */

/* One byte per page, the meaning of the driver's HMM_DMIRROR_PROT_* bytes. */
#define SNAP_NONE 0x00   /* mapped, not present (for this device) */
#define SNAP_ERROR 0x01  /* no mapping, or an unreadable one */
#define SNAP_READ 0x02   /* present, read-only */
#define SNAP_WRITE 0x04  /* present, writable */
#define SNAP_DEVICE 0x08 /* in device memory: not at its own CPU address */
#define SNAP_PMD 0x10    /* mapped by the CPU as one PMD */
#define SNAP_PUD 0x20    /* mapped by the CPU as one PUD */
#define SNAP_ZERO 0x40   /* the shared zero page */

static unsigned char snap_byte(uint64_t addr, uint64_t pfn)
{
	unsigned char b;

	if (pfn & HMM_PFN_ERROR)
		return SNAP_ERROR;
	if (!(pfn & HMM_PFN_VALID))
		return SNAP_NONE;
	b = pfn & HMM_PFN_WRITE ? SNAP_WRITE : SNAP_READ;
	if (va(hmm_pfn_to_addr(pfn)) != addr)
		b |= SNAP_DEVICE;
	if (pfn & HMM_PFN_ZERO)
		b |= SNAP_ZERO;
	if (hmm_pfn_to_map_order(pfn) == 9)
		b |= SNAP_PMD;
	else if (hmm_pfn_to_map_order(pfn) == 18)
		b |= SNAP_PUD;
	return b;
}

/* What device d sees over npages pages from p: the raw words to pfns (if
 * not NULL), the bytes to out. */
static void snapshot(struct hmm_device *d, const void *p, size_t npages, uint64_t *pfns,
		     unsigned char *out)
{
	uint64_t *words = calloc(npages, sizeof(*words));

	cr_assert_not_null(words);
	snapshot_range(d, va(p), npages, words);
	for (size_t i = 0; i < npages; i++) {
		out[i] = snap_byte(va(p) + i * PS, words[i]);
		if (pfns)
			pfns[i] = words[i];
	}
	free(words);
}

static void expect_snap(const unsigned char *m, size_t i, unsigned char want)
{
	cr_assert_eq(m[i], want, "page %zu: snapshot byte 0x%02x, not 0x%02x", i, m[i], want);
}

/* ---- sizes of huge pages -------------------------------------------------- */

/*
 * A private anonymous hugetlb mapping of at least 2 MiB, or the test is
 * skipped, as the kernel's is, when no huge page is free.
 */
static void *map_hugetlb(size_t *len)
{
	size_t hsize = meminfo_field("Hugepagesize:") * 1024;
	void *p;

	if (!hsize || !meminfo_field("HugePages_Free:"))
		cr_skip_test("no free huge page (/proc/sys/vm/nr_hugepages)");
	*len = (2UL << 20) > hsize ? 2UL << 20 : hsize;
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (p == MAP_FAILED)
		cr_skip_test("a huge page could not be allocated: %s", strerror(errno));
	return p;
}

/* ---- the scenarios ------------------------------------------------------- */

#define BOTH_VARIANTS(name, description)                                                 \
	Test(access, private_##description)                                              \
	{                                                                                \
		name(HMM_DEVICE_PRIVATE);                                                \
	}                                                                                \
	Test(access, coherent_##description)                                             \
	{                                                                                \
		name(HMM_DEVICE_COHERENT);                                               \
	}

/* open_close */
static void devices_open_and_close(unsigned type)
{
	struct devs d;
	struct hmm_mirror_stats st;

	devs_open(&d, type, 1);
	cr_assert_eq(hmm_mirror_stats(d.mir[0], &st), 0);
	cr_assert_eq(st.faults, 0);
	cr_assert_eq(st.mapped_pages, 0);
	devs_close(&d);
}
BOTH_VARIANTS(devices_open_and_close, a_device_and_its_mirror_open_and_close)

/* anon_read */
static void device_reads_anonymous_memory(unsigned type)
{
	struct buffer b;
	volatile int *second;
	unsigned char zero_snap[2];

	buffer_begin(&b, type, 1, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	second = (volatile int *)(b.p + PS);
	/* Page 0 is never touched; page 1 gets the zero page below. */
	fill_ints(b.p + 2 * PS, SIZE - 2 * PS, 1, 2 * PS / sizeof(int));
	cr_assert_eq(mprotect(b.p, SIZE, PROT_READ), 0);
	cr_assert_eq(*second, 0);
	read_in_one_round(b.d.mir[0], b.p, b.mirror, SIZE, "device read");
	expect_zero(b.mirror, 2 * PS, "the two untouched pages");
	expect_ints((char *)b.mirror + 2 * PS, SIZE - 2 * PS, 1, 2 * PS / sizeof(int),
		    "the rest");
	/* Both are the shared zero page now, the device's read fault included. */
	snapshot(b.d.dev[0], b.p, 2, NULL, zero_snap);
	expect_snap(zero_snap, 0, SNAP_ZERO | SNAP_READ);
	expect_snap(zero_snap, 1, SNAP_ZERO | SNAP_READ);
	buffer_end(&b);
}
BOTH_VARIANTS(device_reads_anonymous_memory,
	      device_reads_anonymous_memory_with_untouched_and_zero_pages_in_one_fault_round)

/* anon_read_prot */
static void device_read_of_prot_none_fails(unsigned type)
{
	struct buffer b;
	uint64_t rounds;

	buffer_begin(&b, type, 1, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill_ints(b.p, SIZE, 1, 0);
	fill_ints(b.mirror, SIZE, -1, 0);
	cr_assert_eq(mprotect(b.p, SIZE, PROT_NONE), 0);
	cr_assert_eq(dev_read(b.d.mir[0], b.p, b.mirror, SIZE, &rounds), -EFAULT);
	cr_assert_eq(mprotect(b.p, SIZE, PROT_READ), 0);
	expect_ints(b.p, SIZE, 1, 0, "the memory");
	expect_ints(b.mirror, SIZE, -1, 0, "the device's buffer, untouched");
	buffer_end(&b);
}
BOTH_VARIANTS(device_read_of_prot_none_fails,
	      device_read_of_prot_none_memory_fails_with_efault_and_reads_nothing)

/* anon_write */
static void device_writes_anonymous_memory(unsigned type)
{
	struct buffer b;

	buffer_begin(&b, type, 1, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill_ints(b.mirror, SIZE, 1, 0);
	write_in_one_round(b.d.mir[0], b.p, b.mirror, SIZE, "device write");
	expect_ints(b.p, SIZE, 1, 0, "what the CPU reads");
	buffer_end(&b);
}
BOTH_VARIANTS(device_writes_anonymous_memory, device_writes_anonymous_memory_in_one_fault_round)

/* anon_write_prot */
static void device_write_of_read_only_fails(unsigned type)
{
	struct buffer b;
	uint64_t rounds;

	buffer_begin(&b, type, 1, SIZE, PROT_READ, MAP_PRIVATE);
	read_in_one_round(b.d.mir[0], b.p, b.mirror, PS, "device read of one zero page");
	expect_zero(b.mirror, PS, "the zero page");
	fill_ints(b.mirror, SIZE, 1, 0);
	cr_assert_eq(dev_write(b.d.mir[0], b.p, b.mirror, SIZE, &rounds), -EPERM);
	expect_zero(b.p, SIZE, "the read-only memory after the refused write");
	/* Writable now: the zero page the device mapped is replaced. */
	cr_assert_eq(mprotect(b.p, SIZE, PROT_READ | PROT_WRITE), 0);
	write_in_one_round(b.d.mir[0], b.p, b.mirror, SIZE, "device write after mprotect");
	expect_ints(b.p, SIZE, 1, 0, "what the CPU reads");
	buffer_end(&b);
}
BOTH_VARIANTS(device_write_of_read_only_fails,
	      device_write_of_read_only_memory_fails_with_eperm_until_mprotect_allows_it)

/*
 * In a fork child: check that the CPU sees ints i at p (len bytes), make a
 * device of the type, write want at p through it in one fault round, and
 * read that back with the CPU.  Failures go to r; the child's exit status
 * is 0 only if all went well.
 */
static void __attribute__((noreturn))
child_writes_through_its_own_device(unsigned type, void *p, const void *want, size_t len,
				    struct report *r)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = type,
					 .memory = DEVICE_MEMORY, .numa_node = -1 };
	struct hmm_mirror_stats st;
	struct hmm_device *d;
	struct hmm_mirror *m;
	int err;

	if (ints_mismatch(p, len, 1, 0) >= 0) {
		report_fail(r, "the child does not see the parent's data");
		_exit(1);
	}
	if (hmm_device_create(&cfg, &d) || hmm_mirror_create(d, &m)) {
		report_fail(r, "the child could not make a device and mirror");
		_exit(1);
	}
	err = hmm_mirror_write(m, va(p), want, len);
	if (err)
		report_fail(r, "the child's device write: %s", strerror(-err));
	else if (hmm_mirror_stats(m, &st) || st.faults != 1)
		report_fail(r, "the child's device write took %llu fault rounds, not 1",
			    (unsigned long long)st.faults);
	else if (memcmp(p, want, len))
		report_fail(r, "the child's CPU does not read what its device wrote");
	hmm_mirror_destroy(m);
	if (hmm_device_destroy(d))
		report_fail(r, "the child's device would not go");
	_exit(r->errors ? 1 : 0);
}

/*
 * The kernel's fork scenarios: the parent has its own device open; the
 * child, which needs one of its own, writes ints -i over the ints i at p.
 * Returns once the child has ended well.
 */
static void fork_child_device_write(unsigned type, void *p, size_t len)
{
	struct report *r = shared_zalloc(sizeof(*r));
	int *mirror = malloc(len);
	struct devs d;
	pid_t pid;
	int status;

	skip_under_sanitizers_if_children_start_threads();
	devs_open(&d, type, 1);
	fill_ints(p, len, 1, 0);
	fill_ints(mirror, len, -1, 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		child_writes_through_its_own_device(type, p, mirror, len, r);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	expect_no_failures(r);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with %#x",
		  status);
	devs_close(&d);
	free(mirror);
	munmap(r, sizeof(*r));
}

/* anon_write_child, without migration, on small pages or on a THP. */
static void child_device_write_leaves_parent_copy(unsigned type, bool thp)
{
	size_t size = thp ? thp_pmd_size() : SIZE;
	unsigned char *raw = map_anon(2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned char *p = raw;

	if (thp) {
		p = (unsigned char *)((va(raw) + size - 1) & ~(uint64_t)(size - 1));
		cr_assert_eq(madvise(p, size, MADV_HUGEPAGE), 0);
	}
	fork_child_device_write(type, p, size);
	expect_ints(p, size, 1, 0, "the parent's memory after the child's device write");
	munmap(raw, 2 * size);
}

static void child_device_write_leaves_parent_copy_small(unsigned type)
{
	child_device_write_leaves_parent_copy(type, false);
}
BOTH_VARIANTS(child_device_write_leaves_parent_copy_small,
	      after_fork_a_child_device_write_copies_on_write_and_leaves_the_parent_its_data)

static void child_device_write_leaves_parent_copy_thp(unsigned type)
{
	child_device_write_leaves_parent_copy(type, true);
}
BOTH_VARIANTS(child_device_write_leaves_parent_copy_thp,
	      after_fork_a_child_device_write_to_a_thp_leaves_the_parent_its_data)

/* anon_write_child_shared */
static void child_device_write_to_shared_memory(unsigned type)
{
	unsigned char *p = map_anon(SIZE, PROT_READ | PROT_WRITE, MAP_SHARED);

	fork_child_device_write(type, p, SIZE);
	expect_ints(p, SIZE, -1, 0, "the parent's shared memory after the child's device write");
	munmap(p, SIZE);
}
BOTH_VARIANTS(child_device_write_to_shared_memory,
	      after_fork_a_child_device_write_to_shared_memory_is_seen_by_the_parent)

/* anon_write_huge */
static void device_writes_a_thp(unsigned type)
{
	size_t size = thp_pmd_size();
	unsigned char *raw = map_anon(2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned char *p = (unsigned char *)((va(raw) + size - 1) & ~(uint64_t)(size - 1));
	int *mirror = malloc(size);
	struct devs d;

	devs_open(&d, type, 1);
	cr_assert_eq(madvise(p, size, MADV_HUGEPAGE), 0);
	fill_ints(mirror, size, 1, 0);
	write_in_one_round(d.mir[0], p, mirror, size, "device write of a PMD-sized region");
	expect_ints(p, size, 1, 0, "what the CPU reads");
	devs_close(&d);
	free(mirror);
	munmap(raw, 2 * size);
}
BOTH_VARIANTS(device_writes_a_thp, device_writes_an_aligned_thp_region_in_one_fault_round)

/* anon_write_hugetlbfs */
static void device_writes_hugetlb(unsigned type)
{
	size_t size;
	unsigned char *p = map_hugetlb(&size);
	int *mirror = malloc(size);
	struct devs d;

	devs_open(&d, type, 1);
	fill_ints(mirror, size, 1, 0);
	write_in_one_round(d.mir[0], p, mirror, size, "device write of hugetlb memory");
	expect_ints(p, size, 1, 0, "what the CPU reads");
	devs_close(&d);
	free(mirror);
	munmap(p, size);
}
BOTH_VARIANTS(device_writes_hugetlb, device_writes_hugetlb_memory_in_one_fault_round)

/* An unnamed file in /tmp of size bytes, gone when closed. */
static int tmpfile_of(size_t size)
{
	int fd = open("/tmp", O_TMPFILE | O_EXCL | O_RDWR, 0600);

	cr_assert_geq(fd, 0, "O_TMPFILE in /tmp: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	return fd;
}

/* file_read */
static void device_reads_a_shared_file_mapping(unsigned type)
{
	int fd = tmpfile_of(SIZE);
	int *mirror = malloc(SIZE);
	unsigned char *p;
	struct devs d;

	devs_open(&d, type, 1);
	fill_ints(mirror, SIZE, 1, 0);
	cr_assert_eq(pwrite(fd, mirror, SIZE, 0), (ssize_t)SIZE);
	memset(mirror, 0, SIZE);
	p = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	read_in_one_round(d.mir[0], p, mirror, SIZE, "device read of the file");
	expect_ints(mirror, SIZE, 1, 0, "what the device read");
	devs_close(&d);
	free(mirror);
	munmap(p, SIZE);
	close(fd);
}
BOTH_VARIANTS(device_reads_a_shared_file_mapping,
	      device_reads_a_shared_file_mapping_in_one_fault_round)

/* file_write */
static void device_writes_a_shared_file_mapping(unsigned type)
{
	int fd = tmpfile_of(SIZE);
	int *mirror = malloc(SIZE);
	unsigned char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	struct devs d;

	cr_assert_neq(p, MAP_FAILED);
	devs_open(&d, type, 1);
	fill_ints(mirror, SIZE, 1, 0);
	write_in_one_round(d.mir[0], p, mirror, SIZE, "device write of the file");
	expect_ints(p, SIZE, 1, 0, "what the CPU reads through the mapping");
	memset(mirror, 0, SIZE);
	cr_assert_eq(pread(fd, mirror, SIZE, 0), (ssize_t)SIZE);
	expect_ints(mirror, SIZE, 1, 0, "what pread reads from the file");
	devs_close(&d);
	free(mirror);
	munmap(p, SIZE);
	close(fd);
}
BOTH_VARIANTS(device_writes_a_shared_file_mapping,
	      device_writes_a_shared_file_mapping_and_pread_sees_it)

/* anon_read_multiple */
static void device_reads_fresh_buffers_repeatedly(unsigned type)
{
	struct devs d;

	devs_open(&d, type, 1);
	for (int c = 0; c < NTIMES; c++) {
		unsigned char *p = map_anon(SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
		int *mirror = malloc(SIZE);

		fill_ints(p, SIZE, 1, c);
		read_in_one_round(d.mir[0], p, mirror, SIZE, "device read");
		expect_ints(mirror, SIZE, 1, c, "what the device read");
		free(mirror);
		munmap(p, SIZE);
	}
	devs_close(&d);
}
BOTH_VARIANTS(device_reads_fresh_buffers_repeatedly,
	      device_reads_ten_fresh_buffers_each_in_one_fault_round)

/*
 * anon_teardown.  The kernel makes 10 rounds, each unmapping after 0 to 32
 * us.  Here a read of 4 MiB takes longer than that (much longer under the
 * sanitizers), so most such reads meet the munmap.  Every other round
 * waits instead up to twice as long as an unraced read took, so that
 * reads that win the race, and their data, are checked too.
 */
#define TEARDOWN_ROUNDS 100
#define TEARDOWN_KERNEL_DELAY_NS 32000ULL

struct unmapper {
	unsigned char *p;
	uint64_t delay_ns;
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void *unmap_second_half(void *arg)
{
	struct unmapper *u = arg;
	struct timespec t = { (time_t)(u->delay_ns / 1000000000ULL),
			      (long)(u->delay_ns % 1000000000ULL) };

	nanosleep(&t, NULL);
	if (munmap(u->p + SIZE / 2, SIZE / 2))
		abort();
	return NULL;
}

/* How long a device read of a fresh 4 MiB buffer takes here, unraced. */
static uint64_t unraced_read_ns(struct hmm_mirror *m)
{
	unsigned char *p = map_anon(SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(SIZE);
	uint64_t t0;

	fill_ints(p, SIZE, 1, 0);
	t0 = now_ns();
	read_in_one_round(m, p, mirror, SIZE, "an unraced read");
	t0 = now_ns() - t0;
	free(mirror);
	munmap(p, SIZE);
	return t0;
}

static void device_read_races_munmap(unsigned type)
{
	uint64_t seed = now_ns() | 1, long_delay_ns;
	unsigned ok = 0, failed = 0;
	struct devs d;

	devs_open(&d, type, 1);
	long_delay_ns = 2 * unraced_read_ns(d.mir[0]) + TEARDOWN_KERNEL_DELAY_NS;
	cr_log_info("anon_teardown seed %llu, long delays up to %llu ns",
		    (unsigned long long)seed, (unsigned long long)long_delay_ns);
	for (int c = 0; c < TEARDOWN_ROUNDS; c++) {
		struct unmapper u = { map_anon(SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE),
				      rng_next(&seed) % (c % 2 ? long_delay_ns
								: TEARDOWN_KERNEL_DELAY_NS) };
		int *mirror = malloc(SIZE);
		uint64_t rounds;
		pthread_t t;
		int err;

		fill_ints(u.p, SIZE, 1, c);
		cr_assert_eq(pthread_create(&t, NULL, unmap_second_half, &u), 0);
		err = dev_read(d.mir[0], u.p, mirror, SIZE, &rounds);
		if (err == 0) {
			cr_assert_eq(rounds, 1, "round %d: a read that succeeded took %llu fault "
				     "rounds", c, (unsigned long long)rounds);
			expect_ints(mirror, SIZE, 1, c, "what a read that succeeded read");
			ok++;
		} else {
			cr_assert_eq(err, -EFAULT, "round %d: %s", c, strerror(-err));
			failed++;
		}
		pthread_join(t, NULL);
		free(mirror);
		munmap(u.p, SIZE / 2);
	}
	cr_log_info("anon_teardown: %u reads succeeded, %u met the munmap", ok, failed);
	devs_close(&d);
}
BOTH_VARIANTS(device_read_races_munmap,
	      device_read_racing_munmap_of_half_the_buffer_reads_right_data_or_fails_with_efault)

/* snapshot */
static void snapshot_tells_page_kinds_apart(unsigned type)
{
	unsigned char *p = map_anon(7 * PS, PROT_NONE, MAP_PRIVATE);
	volatile int *zero = (volatile int *)(p + 2 * PS);
	unsigned char m[7];
	uint64_t pfns[7];
	struct devs d;

	devs_open(&d, type, 2);
	/* 0: PROT_NONE.  1: a hole, made last (see below). */
	/* 2: read-only, the zero page. */
	cr_assert_eq(mprotect(p + 2 * PS, PS, PROT_READ), 0);
	cr_assert_eq(*zero, 0);
	/* 3: read-only, with data. */
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ | PROT_WRITE), 0);
	*(int *)(p + 3 * PS) = 3;
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ), 0);
	/* 4 to 6 writable; 5 moves to device 0 and 6 to device 1. */
	cr_assert_eq(mprotect(p + 4 * PS, 3 * PS, PROT_READ | PROT_WRITE), 0);
	*(int *)(p + 4 * PS) = 3;
	*(int *)(p + 5 * PS) = 5;
	*(int *)(p + 6 * PS) = 6;
	to_device(d.dev[0], p + 5 * PS, 1);
	to_device(d.dev[1], p + 6 * PS, 1);
	/* The hole just before the snapshot (the kernel's test makes it
	 * first): a hole is free address space, which the migrations'
	 * allocations in this process (libhmm's, a sanitizer's) could take. */
	cr_assert_eq(munmap(p + PS, PS), 0);

	snapshot(d.dev[0], p, 7, pfns, m);
	cr_assert(mincore(p + PS, PS, &(unsigned char){ 0 }) == -1 && errno == ENOMEM,
		  "something mapped the hole during the snapshot: no conclusion");
	expect_snap(m, 0, SNAP_ERROR);
	expect_snap(m, 1, SNAP_ERROR);
	expect_snap(m, 2, SNAP_ZERO | SNAP_READ);
	expect_snap(m, 3, SNAP_READ);
	expect_snap(m, 4, SNAP_WRITE);
	expect_snap(m, 5, SNAP_DEVICE | SNAP_WRITE);
	cr_assert_eq(*(int *)hmm_pfn_to_addr(pfns[5]), 5, "device 0's memory holds page 5");
	if (type == HMM_DEVICE_PRIVATE) {
		expect_snap(m, 6, SNAP_NONE);
	} else {
		/* The kernel's DEV_COHERENT_REMOTE: present, in place. */
		expect_snap(m, 6, SNAP_DEVICE | SNAP_WRITE);
		cr_assert_eq(*(int *)hmm_pfn_to_addr(pfns[6]), 6, "device 1's memory holds page 6");
	}
	devs_close(&d);
	munmap(p, PS);
	munmap(p + 2 * PS, 5 * PS);
}
/* Private devices only: the coherent variant fails (see the top of the file). */
Test(access, private_snapshot_tells_errors_read_only_writable_and_device_pages_apart)
{
	snapshot_tells_page_kinds_apart(HMM_DEVICE_PRIVATE);
}

/* compound */
static void snapshot_of_hugetlb_reports_large_pages(unsigned type)
{
	size_t size;
	unsigned char *p = map_hugetlb(&size);
	size_t npages = size / PS;
	unsigned char *m = malloc(npages);
	unsigned char level;
	struct devs d;

	devs_open(&d, type, 1);
	fill_ints(p, size, 1, 0);
	snapshot(d.dev[0], p, npages, NULL, m);
	level = m[0] & SNAP_PUD ? SNAP_PUD : SNAP_PMD;
	for (size_t i = 0; i < npages; i++)
		expect_snap(m, i, SNAP_WRITE | level);
	cr_assert_eq(mprotect(p, size, PROT_READ), 0);
	snapshot(d.dev[0], p, npages, NULL, m);
	level = m[0] & SNAP_PUD ? SNAP_PUD : SNAP_PMD;
	for (size_t i = 0; i < npages; i++)
		expect_snap(m, i, SNAP_READ | level);
	devs_close(&d);
	free(m);
	munmap(p, size);
}
BOTH_VARIANTS(snapshot_of_hugetlb_reports_large_pages,
	      snapshot_of_hugetlb_memory_reports_every_page_as_part_of_a_large_mapping)

/* double_map */
static void two_devices_read_the_same_pages(unsigned type)
{
	size_t size = 6 * PS;
	struct buffer b;

	buffer_begin(&b, type, 2, size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill_ints(b.p, size, 1, 0);
	cr_assert_eq(mprotect(b.p, size, PROT_READ), 0);
	read_in_one_round(b.d.mir[0], b.p, b.mirror, size, "device 0's read");
	expect_ints(b.mirror, size, 1, 0, "what device 0 read");
	memset(b.mirror, 0, size);
	read_in_one_round(b.d.mir[1], b.p, b.mirror, size, "device 1's read");
	expect_ints(b.mirror, size, 1, 0, "what device 1 read");
	/* The pages move to device 1; device 0 still reads them right. */
	to_device(b.d.dev[1], b.p, 6);
	memset(b.mirror, 0, size);
	read_in_one_round(b.d.mir[0], b.p, b.mirror, size, "device 0's read after the migration");
	expect_ints(b.mirror, size, 1, 0, "what device 0 read after the migration");
	buffer_end(&b);
}
BOTH_VARIANTS(two_devices_read_the_same_pages,
	      two_devices_read_the_same_read_only_pages_before_and_after_one_takes_them)

/*
 * The start of the kernel's exclusive scenarios: 4 MiB of ints i, which
 * the device takes for atomics and reads back (HMM_DMIRROR_EXCLUSIVE).
 */
static void excl_begin(struct buffer *b, unsigned type)
{
	int err;

	buffer_begin(b, type, 1, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill_ints(b->p, SIZE, 1, 0);
	err = hmm_make_device_exclusive(b->d.mir[0], va(b->p), va(b->p) + SIZE);
	cr_assert_eq(err, 0, "hmm_make_device_exclusive: %s", strerror(-err));
	cr_assert_eq(hmm_mirror_check_exclusive(b->d.mir[0], va(b->p), va(b->p) + SIZE), 0);
	cr_assert_eq(hmm_mirror_read(b->d.mir[0], va(b->p), b->mirror, SIZE), 0);
	expect_ints(b->mirror, SIZE, 1, 0, "what the device read of its exclusive pages");
}

/* Add 1 to every int with the CPU, checking the old value; then the new. */
static void cpu_increments(void *p, size_t len)
{
	int *v = p;

	for (size_t i = 0; i < len / sizeof(int); i++)
		if (v[i]++ != (int)i)
			cr_assert_fail("int %zu was %d, not %zu", i, v[i] - 1, i);
	expect_ints(p, len, 1, 1, "after the CPU's increments");
}

/* exclusive */
static void cpu_access_ends_exclusive_access(unsigned type)
{
	struct buffer b;

	excl_begin(&b, type);
	cpu_increments(b.p, SIZE);
	for (size_t i = 0; i < NPAGES; i++)
		cr_assert_eq(hmm_mirror_check_exclusive(b.d.mir[0], va(b.p) + i * PS,
							va(b.p) + (i + 1) * PS), -EPERM,
			     "page %zu is still held for atomics", i);
	buffer_end(&b);
}
BOTH_VARIANTS(cpu_access_ends_exclusive_access,
	      cpu_access_to_exclusive_pages_takes_them_back_with_their_data)

/* exclusive_mprotect */
static void mprotect_ends_exclusive_writes(unsigned type)
{
	uint64_t rounds;
	struct buffer b;

	excl_begin(&b, type);
	cr_assert_eq(mprotect(b.p, SIZE, PROT_READ), 0);
	cr_assert_eq(dev_write(b.d.mir[0], b.p, b.mirror, SIZE, &rounds), -EPERM);
	buffer_end(&b);
}
BOTH_VARIANTS(mprotect_ends_exclusive_writes,
	      device_write_to_exclusive_pages_made_read_only_fails_with_eperm)

/* exclusive_cow */
static void fork_after_exclusive_copies_on_write(unsigned type)
{
	struct buffer b;
	pid_t pid;
	int status;

	excl_begin(&b, type);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int *v = (int *)b.p;

		for (size_t i = 0; i < SIZE / sizeof(int); i++)
			if (v[i]++ != (int)i)
				_exit(1);
		_exit(ints_mismatch(b.p, SIZE, 1, 1) < 0 ? 0 : 2);
	}
	cpu_increments(b.p, SIZE);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child's copy was wrong (status %#x)", status);
	buffer_end(&b);
}
BOTH_VARIANTS(fork_after_exclusive_copies_on_write,
	      fork_after_exclusive_access_gives_parent_and_child_their_own_copies)

/* hmm_cow_in_device */
static void parent_write_after_fork_of_device_pages(unsigned type)
{
	size_t npages = 4, size = npages * PS;
	unsigned char *p = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned char m[4];
	struct devs d;
	pid_t pid;
	int status;

	devs_open(&d, type, 1);
	fill_ints(p, size, 1, 0);
	to_device(d.dev[0], p, npages);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		for (;;)
			pause();
	fill_ints(p, size, 1, 0);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);
	snapshot(d.dev[0], p, npages, NULL, m);
	for (size_t i = 0; i < npages; i++)
		expect_snap(m, i, SNAP_WRITE);
	expect_ints(p, size, 1, 0, "the parent's data");
	devs_close(&d);
	munmap(p, size);
}
BOTH_VARIANTS(parent_write_after_fork_of_device_pages,
	      parent_write_after_fork_of_device_pages_leaves_writable_system_pages)
