/* SPDX-License-Identifier: MIT */
/*
 * test_conformance_hmmfs.c - the HMM scenarios of the kernel's selftest
 * (tools/testing/selftests/mm/hmm-tests.c) and of the 2015 dummy driver's
 * suite that make sense on files, run on the files of a real hmmfs mount
 * mapped MAP_SHARED, with the mount's own devices attached to this process
 * (hmm_device_attach()): device 0 is private, device 1 coherent
 * ("devices=2,device_type=private:coherent", hmmfs(8)).  Each test has a
 * fresh mount.
 *
 * How the kernel's pieces map here: HMM_DMIRROR_READ / _WRITE are
 * hmm_mirror_read() / hmm_mirror_write() of an attached device's mirror,
 * their fault rounds the growth of hmm_mirror_stats().faults;
 * HMM_DMIRROR_SNAPSHOT is hmm_range_fault() with no fault asked and the
 * device as dev_private_owner; the migration of a file's pages is
 * hmm_file_migrate() (the kernel's driver cannot migrate a shared file
 * mapping at all: see below), and where pages are is hmm_file_residency().
 *
 *   scenario (kernel or dummy)          test
 *   ----------------------------------  --------------------------------------
 *   file_read                           *_device_reads_a_mapped_file
 *   file_write (+ dummy: close, remap)  *_device_writes_a_mapped_file_...
 *   anon_read_prot / anon_write_prot    prot_none_... / read_only_...
 *   migrate, migrate_multiple           *_migrated_pages_...
 *   migrate_fault                       *_half_faulted_back_...
 *   double_map, migrate across devices  *_holder_and_other_device_...
 *   dummy: ftruncate to half            after_ftruncate_to_half_...
 *   truncation while mapped (dummy)     truncating_pages_the_device_maps_...
 *   anon_write_child_shared             a_child_writing_through_its_own_device_...
 *   snapshot                            *_snapshot_...
 *
 * Scenarios run on both devices have a private_ and a coherent_ test: the
 * device used (or holding the pages) is the private or the coherent one.
 *
 * Where this differs from what the kernel does, and why:
 *  - migration: the kernel's migrate_vma_pages() refuses pages that have a
 *    mapping (page cache pages), so its driver's MIGRATE_TO_DEV on a shared
 *    file mapping fails with ENOENT and nothing moves.  An hmmfs file's
 *    pages move through the filesystem instead (HMM_IOC_MIGRATE), which is
 *    what these tests exercise; then, as documented in hmm_mirror(3) and
 *    hmmfs(8), the attached device that holds the pages uses them in place,
 *    the CPU (and the other device) bring a private device's pages back,
 *    and a coherent device's pages stay where they are when the CPU reads
 *    them.  What is checked is what those pages say, with residency.
 *  - migrate_fault reads half the pages back with MADV_RANDOM on the
 *    mapping, so that the kernel's read-ahead brings back only the pages
 *    touched, and the second migration can be counted exactly.
 *  - the fork scenario: the child inherits the parent's shared mapping and
 *    attaches a device of its own (the parent's is the parent's,
 *    libhmm(3)); the kernel's child opens its own device too.
 *  - coherent devices: the kernel's coherent device memory is one copy that
 *    the CPU maps.  The CPU can map only a copy of an hmmfs page, in the
 *    page cache, so the daemon keeps the two from diverging: the device
 *    that holds the page uses it in place only while the CPU has no copy
 *    (after a migration to the device), goes through the CPU's copy
 *    otherwise, and loses it before the CPU copies it (hmmfs(8),
 *    "Coherent devices").  The data seen is the kernel's; only the cost
 *    differs.
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"
#include "snapshot.h"

#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL
#define NPAGES 64UL
#define LEN (NPAGES * PS)
#define PRIV 0 /* the mount's private device */
#define COH 1  /* its coherent one */

static void setup(void)
{
	mnt_setup_opts("host_mem=64M,devices=2,device_mem=16M,device_type=private:coherent");
}

TestSuite(hmmfs, .init = setup, .fini = mnt_teardown, .timeout = 120);

/* A scenario run with arg PRIV and with arg COH, as private_... and coherent_... tests. */
#define BOTH_VARIANTS(scenario, description) \
	Test(hmmfs, private_##description) \
	{ \
		scenario(PRIV); \
	} \
	Test(hmmfs, coherent_##description) \
	{ \
		scenario(COH); \
	}

/* ---- files, devices, residency ---------------------------------------------- */

struct file {
	int fd;
	unsigned char *p; /* LEN bytes mapped MAP_SHARED */
};

/* mp(rel) holding LEN bytes of pattern seed, opened with flags and mapped
 * shared with prot. */
static struct file file_map(const char *rel, unsigned seed, int flags, int prot)
{
	struct file f;
	int fd = create_file(rel);

	write_pattern(fd, 0, LEN, seed);
	close(fd);
	f.fd = open(mp(rel), flags | O_CLOEXEC);
	cr_assert_geq(f.fd, 0, "open %s: %m", rel);
	f.p = mmap(NULL, LEN, prot, MAP_SHARED, f.fd, 0);
	cr_assert_neq(f.p, MAP_FAILED, "mmap: %m");
	return f;
}

static void file_unmap(struct file *f)
{
	cr_assert_eq(munmap(f->p, LEN), 0);
	cr_assert_eq(close(f->fd), 0);
}

struct dev {
	struct hmm_device *dev;
	struct hmm_mirror *m;
};

static struct dev dev_attach(unsigned index)
{
	struct dev d;

	cr_assert_eq(hmm_device_attach(mnt.dir, index, &d.dev), 0, "attach device %u", index);
	cr_assert_eq(hmm_mirror_create(d.dev, &d.m), 0);
	return d;
}

static void dev_detach(struct dev *d)
{
	hmm_mirror_destroy(d->m);
	cr_assert_eq(hmm_device_destroy(d->dev), 0);
}

static uint64_t va(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static uint64_t faults(const struct dev *d)
{
	struct hmm_mirror_stats st;

	cr_assert_eq(hmm_mirror_stats(d->m, &st), 0);
	return st.faults;
}

/* The device reads len bytes at p, which must hold pattern seed from off. */
static void dev_expect(const struct dev *d, const void *p, size_t len, unsigned long long off,
		       unsigned seed, const char *what)
{
	unsigned char *buf = malloc(len);
	long long bad;

	cr_assert_not_null(buf);
	cr_assert_eq(hmm_mirror_read(d->m, va(p), buf, len), 0, "%s: device read", what);
	bad = pattern_check(buf, len, off, seed);
	cr_assert_eq(bad, -1, "%s: the device read a wrong byte at %lld", what, bad);
	free(buf);
}

/* The device writes pattern seed (from off) over len bytes at p. */
static void dev_fill(const struct dev *d, void *p, size_t len, unsigned long long off,
		     unsigned seed)
{
	unsigned char *buf = malloc(len);

	cr_assert_not_null(buf);
	pattern_fill(buf, len, off, seed);
	cr_assert_eq(hmm_mirror_write(d->m, va(p), buf, len), 0, "device write");
	free(buf);
}

/* Where page i of the file lives: HMM_LOC_HOLE, HMM_LOC_HOST or a device. */
static int where(int fd, uint64_t i)
{
	struct hmm_residency *r = malloc(sizeof(*r));
	int loc = HMM_LOC_HOLE - 1;

	cr_assert_not_null(r);
	cr_assert_eq(hmm_file_residency(fd, i * PS, r), 0);
	if (r->count > 0)
		loc = r->ranges[0].location;
	free(r);
	return loc;
}

/* Pages [first, first + n) all live at loc. */
static void expect_at(int fd, uint64_t first, uint64_t n, int loc, const char *what)
{
	for (uint64_t i = first; i < first + n; i++)
		cr_assert_eq(where(fd, i), loc, "%s: page %lu lives at %d, not %d", what,
			     (unsigned long)i, where(fd, i), loc);
}

static void migrate(int fd, int dest, uint64_t want_moved)
{
	struct hmm_migrate r;

	cr_assert_eq(hmm_file_migrate(fd, 0, 0, dest, &r), 0, "migrate to %d", dest);
	cr_assert_eq(r.moved, want_moved, "moved %lu pages to %d, not %lu",
		     (unsigned long)r.moved, dest, (unsigned long)want_moved);
}

/* The CPU reads len bytes at p, which must hold pattern seed from off. */
static void cpu_expect(const void *p, size_t len, unsigned long long off, unsigned seed,
		       const char *what)
{
	long long bad = pattern_check(p, len, off, seed);

	cr_assert_eq(bad, -1, "%s: the CPU read a wrong byte at %lld", what, bad);
}

/* ---- file_read, file_write ---------------------------------------------------- */

/* Kernel: file_read.  A file written with write(2), mapped read-only: the
 * device reads it in one fault round. */
static void device_reads_a_mapped_file(unsigned index)
{
	struct file f = file_map("r", 1, O_RDONLY, PROT_READ);
	struct dev d = dev_attach(index);
	uint64_t before = faults(&d);

	dev_expect(&d, f.p, LEN, 0, 1, "file_read");
	cr_assert_eq(faults(&d) - before, 1, "one fault round");
	before = faults(&d);
	dev_expect(&d, f.p, LEN, 0, 1, "file_read again");
	cr_assert_eq(faults(&d), before, "every page was mapped already");
	dev_detach(&d);
	file_unmap(&f);
}

BOTH_VARIANTS(device_reads_a_mapped_file, device_reads_a_mapped_file)

/* Kernel: file_write, with the dummy suite's close and remap: what the
 * device writes through a shared mapping is the file's data, for the
 * mapping, for pread(2), and after munmap, close and a new mapping. */
static void device_writes_a_mapped_file(unsigned index)
{
	struct file f = file_map("w", 2, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d = dev_attach(index);
	unsigned char *buf = malloc(LEN);
	uint64_t before = faults(&d);

	cr_assert_not_null(buf);
	dev_fill(&d, f.p, LEN, 0, 3);
	cr_assert_eq(faults(&d) - before, 1, "one fault round");
	cpu_expect(f.p, LEN, 0, 3, "the mapping after the device's write");
	expect_pattern(f.fd, 0, LEN, 3);
	file_unmap(&f);

	f.fd = open(mp("w"), O_RDWR | O_CLOEXEC);
	cr_assert_geq(f.fd, 0);
	expect_pattern(f.fd, 0, LEN, 3);
	f.p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd, 0);
	cr_assert_neq(f.p, MAP_FAILED);
	dev_expect(&d, f.p, LEN, 0, 3, "the new mapping");
	dev_fill(&d, f.p, LEN, 0, 4);
	cr_assert_eq(munmap(f.p, LEN), 0);
	cr_assert_eq(pread(f.fd, buf, LEN, 0), (ssize_t)LEN);
	cpu_expect(buf, LEN, 0, 4, "pread after the second write and munmap");
	cr_assert_eq(close(f.fd), 0);
	free(buf);
	dev_detach(&d);
}

BOTH_VARIANTS(device_writes_a_mapped_file, device_writes_a_mapped_file_kept_across_remap)

/* ---- protections ---------------------------------------------------------------- */

/* Kernel: anon_read_prot, on a file: nothing of a PROT_NONE mapping can be
 * read or written by the device, and the file keeps its data. */
Test(hmmfs, prot_none_mapping_of_a_file_fails_device_access_with_efault)
{
	struct file f = file_map("none", 5, O_RDWR, PROT_NONE);
	struct dev d = dev_attach(PRIV);
	unsigned char *buf = malloc(LEN);

	cr_assert_not_null(buf);
	cr_assert_eq(hmm_mirror_read(d.m, va(f.p), buf, LEN), -EFAULT);
	pattern_fill(buf, LEN, 0, 6);
	cr_assert_eq(hmm_mirror_write(d.m, va(f.p), buf, LEN), -EFAULT);
	/* Readable again: the device sees the file's own data. */
	cr_assert_eq(mprotect(f.p, LEN, PROT_READ), 0);
	dev_expect(&d, f.p, LEN, 0, 5, "after mprotect(PROT_READ)");
	expect_pattern(f.fd, 0, LEN, 5);
	free(buf);
	dev_detach(&d);
	file_unmap(&f);
}

/* Kernel: anon_write_prot, on a file: a device write through a PROT_READ
 * mapping of a writable file, or through any mapping of a file opened
 * O_RDONLY, is refused with EPERM and changes nothing; reads work. */
static void device_write_of_read_only_mapping_fails(unsigned index, int flags)
{
	struct file f = file_map(flags == O_RDONLY ? "ro" : "rw", 7, flags, PROT_READ);
	struct dev d = dev_attach(index);
	unsigned char *buf = malloc(LEN);

	cr_assert_not_null(buf);
	dev_expect(&d, f.p, LEN, 0, 7, "before the write");
	pattern_fill(buf, LEN, 0, 8);
	cr_assert_eq(hmm_mirror_write(d.m, va(f.p), buf, LEN), -EPERM);
	dev_expect(&d, f.p, LEN, 0, 7, "after the refused write");
	cpu_expect(f.p, LEN, 0, 7, "the CPU after the refused write");
	expect_pattern(f.fd, 0, LEN, 7);
	if (flags == O_RDWR) {
		/* Made writable, the same write lands. */
		cr_assert_eq(mprotect(f.p, LEN, PROT_READ | PROT_WRITE), 0);
		dev_fill(&d, f.p, LEN, 0, 8);
		expect_pattern(f.fd, 0, LEN, 8);
	} else {
		cr_assert_eq(mprotect(f.p, LEN, PROT_READ | PROT_WRITE), -1);
		cr_assert_eq(errno, EACCES);
	}
	free(buf);
	dev_detach(&d);
	file_unmap(&f);
}

Test(hmmfs, read_only_mapping_of_a_writable_file_fails_device_writes_with_eperm)
{
	device_write_of_read_only_mapping_fails(PRIV, O_RDWR);
}

Test(hmmfs, read_only_file_fails_device_writes_with_eperm)
{
	device_write_of_read_only_mapping_fails(PRIV, O_RDONLY);
}

Test(hmmfs, read_only_file_fails_coherent_device_writes_with_eperm)
{
	device_write_of_read_only_mapping_fails(COH, O_RDONLY);
}

Test(hmmfs, read_only_file_on_the_device_fails_device_writes_with_eperm)
{
	struct file f = file_map("ro-dev", 9, O_RDONLY, PROT_READ);
	struct dev d = dev_attach(PRIV);
	unsigned char *buf = malloc(LEN);

	cr_assert_not_null(buf);
	migrate(f.fd, PRIV, NPAGES);
	pattern_fill(buf, LEN, 0, 10);
	cr_assert_eq(hmm_mirror_write(d.m, va(f.p), buf, LEN), -EPERM);
	dev_expect(&d, f.p, LEN, 0, 9, "the device memory after the refused write");
	expect_at(f.fd, 0, NPAGES, PRIV, "after the refused write");
	expect_pattern(f.fd, 0, LEN, 9);
	free(buf);
	dev_detach(&d);
	file_unmap(&f);
}

/* ---- migration ---------------------------------------------------------------- */

static struct hmm_file_stat stat_of_file(int fd)
{
	struct hmm_file_stat st;

	cr_assert_eq(hmm_file_stat(fd, &st), 0);
	return st;
}

/* Kernel: migrate, and migrate_multiple's rounds.  The file's pages move
 * to the device, which then reads them in place; the CPU's read brings a
 * private device's pages back, and reads a coherent device's in place. */
static void migrated_pages_are_read_in_place(unsigned index)
{
	struct file f = file_map("m", 11, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d = dev_attach(index);

	for (int round = 0; round < 3; round++) {
		uint64_t cpu_faults;

		migrate(f.fd, index, index == PRIV || round == 0 ? NPAGES : 0);
		expect_at(f.fd, 0, NPAGES, index, "after the migration");
		cpu_faults = stat_of_file(f.fd).cpu_faults;
		dev_expect(&d, f.p, LEN, 0, 11, "the device's read");
		expect_at(f.fd, 0, NPAGES, index, "after the device's read");
		cr_assert_eq(stat_of_file(f.fd).cpu_faults, cpu_faults,
			     "the device's read brought pages back");
		cpu_expect(f.p, LEN, 0, 11, "the CPU's read");
		if (index == PRIV) {
			expect_at(f.fd, 0, NPAGES, HMM_LOC_HOST, "after the CPU's read");
			cr_assert_eq(stat_of_file(f.fd).cpu_faults - cpu_faults, NPAGES);
		} else {
			expect_at(f.fd, 0, NPAGES, COH, "after the CPU's read in place");
			cr_assert_eq(stat_of_file(f.fd).cpu_faults, cpu_faults);
		}
	}
	expect_pattern(f.fd, 0, LEN, 11);
	dev_detach(&d);
	file_unmap(&f);
}

BOTH_VARIANTS(migrated_pages_are_read_in_place, migrated_pages_are_read_in_place_by_their_device)

/* Kernel: migrate_fault.  The CPU reads the first half back, the range is
 * migrated again: only what came back moves, and the device reads it all. */
static void half_faulted_back_migrates_again(unsigned index)
{
	struct file f = file_map("mf", 12, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d = dev_attach(index);
	struct hmm_migrate r;

	cr_assert_eq(madvise(f.p, LEN, MADV_RANDOM), 0);
	migrate(f.fd, index, NPAGES);
	dev_expect(&d, f.p, LEN, 0, 12, "after the migration");
	cpu_expect(f.p, LEN / 2, 0, 12, "the CPU's read of the first half");
	expect_at(f.fd, 0, NPAGES / 2, index == PRIV ? HMM_LOC_HOST : COH, "the first half");
	expect_at(f.fd, NPAGES / 2, NPAGES / 2, index, "the second half");
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, index, &r), 0);
	cr_assert_eq(r.moved, index == PRIV ? NPAGES / 2 : 0);
	cr_assert_eq(r.skipped, index == PRIV ? NPAGES / 2 : NPAGES);
	expect_at(f.fd, 0, NPAGES, index, "after the second migration");
	dev_expect(&d, f.p, LEN, 0, 12, "after the second migration");
	cpu_expect(f.p, LEN, 0, 12, "the CPU's read of everything");
	dev_detach(&d);
	file_unmap(&f);
}

BOTH_VARIANTS(half_faulted_back_migrates_again, half_faulted_back_migrates_again)

/* ---- two devices --------------------------------------------------------------- */

/* Kernel: double_map, and migrate with the other device reading: both
 * devices read the same pages; after the pages move to one, the other
 * reads the right data (a private device's pages come back to host RAM
 * for it; a coherent device's are read in place through the CPU's
 * mapping), a write by the device that holds them is seen by the other
 * device and by the CPU, and the CPU's stores by the holder. */
static void both_devices_see_the_same_data(unsigned holder)
{
	unsigned other = holder == PRIV ? COH : PRIV;
	struct file f = file_map("two", 13, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d[2] = { dev_attach(PRIV), dev_attach(COH) };

	dev_expect(&d[PRIV], f.p, LEN, 0, 13, "device 0, host pages");
	dev_expect(&d[COH], f.p, LEN, 0, 13, "device 1, host pages");
	expect_at(f.fd, 0, NPAGES, HMM_LOC_HOST, "after both reads");

	migrate(f.fd, holder, NPAGES);
	dev_expect(&d[holder], f.p, LEN, 0, 13, "the holder");
	dev_expect(&d[other], f.p, LEN, 0, 13, "the other device");
	expect_at(f.fd, 0, NPAGES, holder == PRIV ? HMM_LOC_HOST : COH,
		  "after the other device's read");

	/* A private holder lost the pages to the other device's read; a
	 * coherent one still holds them, and the CPU has a copy, through
	 * which the holder's write goes (hmmfs(8), "Coherent devices"). */
	if (holder == PRIV)
		migrate(f.fd, holder, NPAGES);
	dev_fill(&d[holder], f.p, LEN, 0, 14);
	expect_at(f.fd, 0, NPAGES, holder, "after the holder's write");
	dev_expect(&d[other], f.p, LEN, 0, 14, "the other device after the holder's write");
	cpu_expect(f.p, LEN, 0, 14, "the CPU after the holder's write");
	expect_pattern(f.fd, 0, LEN, 14);
	/* The other way round: what the CPU stored through its mapping, not
	 * yet written back, is what the holder reads. */
	pattern_fill(f.p, LEN, 0, 15);
	dev_expect(&d[holder], f.p, LEN, 0, 15, "the holder after the CPU's stores");
	expect_pattern(f.fd, 0, LEN, 15);
	dev_expect(&d[other], f.p, LEN, 0, 15, "the other device after the CPU's stores");
	dev_detach(&d[COH]);
	dev_detach(&d[PRIV]);
	file_unmap(&f);
}

BOTH_VARIANTS(both_devices_see_the_same_data, holder_and_other_device_see_the_same_data)

/* ---- truncation --------------------------------------------------------------- */

/* Dummy: ftruncate to half.  The device cannot read or write the second
 * half any more (EFAULT), a read across the end gets the first half, and
 * the first half still reads right, wherever the pages were. */
static void after_ftruncate_to_half(int loc)
{
	struct file f = file_map("t", 15, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d = dev_attach(PRIV);
	unsigned char *buf = malloc(LEN);

	cr_assert_not_null(buf);
	if (loc != HMM_LOC_HOST)
		migrate(f.fd, loc, NPAGES);
	dev_expect(&d, f.p, LEN, 0, 15, "before the truncation");
	cr_assert_eq(ftruncate(f.fd, LEN / 2), 0);
	cr_assert_eq(hmm_mirror_read(d.m, va(f.p + LEN / 2), buf, LEN / 2), -EFAULT);
	cr_assert_eq(hmm_mirror_read(d.m, va(f.p + LEN - PS), buf, PS), -EFAULT, "the last page");
	cr_assert_eq(hmm_mirror_write(d.m, va(f.p + LEN / 2), buf, PS), -EFAULT);
	memset(buf, 0, LEN);
	cr_assert_eq(hmm_mirror_read(d.m, va(f.p), buf, LEN), -EFAULT);
	cpu_expect(buf, LEN / 2, 0, 15, "the first half of the read across the end");
	dev_expect(&d, f.p, LEN / 2, 0, 15, "the first half");
	cr_assert_eq(stat_of_file(f.fd).size, LEN / 2);
	if (loc != HMM_LOC_HOST)
		cr_assert_eq(stat_of_file(f.fd).device_bytes[loc], LEN / 2,
			     "the second half's device memory was freed");
	expect_pattern(f.fd, 0, LEN / 2, 15);
	free(buf);
	dev_detach(&d);
	file_unmap(&f);
}

Test(hmmfs, after_ftruncate_to_half_of_host_pages_the_device_cannot_reach_the_second_half)
{
	after_ftruncate_to_half(HMM_LOC_HOST);
}

Test(hmmfs, after_ftruncate_to_half_of_its_own_pages_the_device_cannot_reach_the_second_half)
{
	after_ftruncate_to_half(PRIV);
}

Test(hmmfs, after_ftruncate_to_half_of_coherent_pages_the_device_cannot_reach_the_second_half)
{
	after_ftruncate_to_half(COH);
}

/* Truncation while the device maps the pages: its mappings of the pages
 * that go are dropped first (the mirror is invalidated), those of the
 * pages that stay may remain. */
static void truncating_pages_the_device_maps(int loc)
{
	struct file f = file_map("tm", 16, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d = dev_attach(PRIV);
	struct hmm_mirror_stats before, after;

	if (loc != HMM_LOC_HOST)
		migrate(f.fd, loc, NPAGES);
	dev_expect(&d, f.p, LEN, 0, 16, "before the truncation");
	cr_assert_eq(hmm_mirror_stats(d.m, &before), 0);
	cr_assert_geq(before.mapped_pages, NPAGES);
	cr_assert_eq(ftruncate(f.fd, LEN / 2), 0);
	cr_assert_eq(hmm_mirror_stats(d.m, &after), 0);
	cr_assert_gt(after.invalidations, before.invalidations);
	cr_assert_geq(after.pages_invalidated - before.pages_invalidated, NPAGES / 2,
		      "the truncated pages left the device's page table");
	cr_assert_leq(after.mapped_pages, NPAGES / 2);
	dev_expect(&d, f.p, LEN / 2, 0, 16, "the first half after the truncation");
	dev_detach(&d);
	file_unmap(&f);
}

Test(hmmfs, truncating_host_pages_the_device_maps_invalidates_them_first)
{
	truncating_pages_the_device_maps(HMM_LOC_HOST);
}

Test(hmmfs, truncating_its_own_pages_the_device_maps_invalidates_them_first)
{
	truncating_pages_the_device_maps(PRIV);
}

/* ---- fork ------------------------------------------------------------------------ */

enum child_result {
	CHILD_OK,
	CHILD_SAW_WRONG_DATA,
	CHILD_NO_DEVICE,
	CHILD_WRITE_FAILED,
	CHILD_DID_NOT_SEE_ITS_WRITE,
};

static const char *const child_failures[] = {
	"ok", "saw other data than the parent's", "could not attach its device",
	"failed its device write", "did not see its device's write",
};

/* The child: checks the shared mapping, attaches device index of its own
 * and writes pattern 18 through it. */
static int child_writes_through_its_own_device(unsigned char *p, unsigned index)
{
	struct hmm_device *dev;
	struct hmm_mirror *m;
	unsigned char *buf = malloc(LEN);

	if (!buf || pattern_check(p, LEN, 0, 17) != -1)
		return CHILD_SAW_WRONG_DATA;
	if (hmm_device_attach(mnt.dir, index, &dev) || hmm_mirror_create(dev, &m))
		return CHILD_NO_DEVICE;
	pattern_fill(buf, LEN, 0, 18);
	if (hmm_mirror_write(m, va(p), buf, LEN))
		return CHILD_WRITE_FAILED;
	if (pattern_check(p, LEN, 0, 18) != -1)
		return CHILD_DID_NOT_SEE_ITS_WRITE;
	hmm_mirror_destroy(m);
	hmm_device_destroy(dev);
	free(buf);
	return CHILD_OK;
}

/* Kernel: anon_write_child_shared, on a file: the child writes through a
 * device of its own into the mapping it shares with the parent, who sees
 * the data, in the mapping and in the file, as does the parent's device. */
static void a_child_writing_through_its_own_device(unsigned index, int loc)
{
	struct file f = file_map("fork", 17, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d = dev_attach(index);
	int status;
	pid_t pid;

	skip_under_sanitizers_if_children_start_threads();
	if (loc != HMM_LOC_HOST)
		migrate(f.fd, loc, NPAGES);
	dev_expect(&d, f.p, LEN, 0, 17, "the parent's device before the fork");
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(child_writes_through_its_own_device(f.p, index));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the child died (status %#x)", status);
	cr_assert_eq(WEXITSTATUS(status), CHILD_OK, "the child %s",
		     WEXITSTATUS(status) < 5 ? child_failures[WEXITSTATUS(status)] : "?");
	dev_expect(&d, f.p, LEN, 0, 18, "the parent's device after the child's write");
	cpu_expect(f.p, LEN, 0, 18, "the parent's mapping");
	expect_pattern(f.fd, 0, LEN, 18);
	dev_detach(&d);
	file_unmap(&f);
}

Test(hmmfs, a_child_writing_through_its_own_private_device_is_seen_by_the_parent)
{
	a_child_writing_through_its_own_device(PRIV, HMM_LOC_HOST);
}

Test(hmmfs, a_child_writing_through_its_own_coherent_device_is_seen_by_the_parent)
{
	a_child_writing_through_its_own_device(COH, HMM_LOC_HOST);
}

Test(hmmfs, a_child_writing_in_place_on_the_device_is_seen_by_the_parent)
{
	a_child_writing_through_its_own_device(PRIV, PRIV);
}

/* ---- snapshot ------------------------------------------------------------------- */

/* What device d sees of the CPU's page table over [p, p + LEN). */
static void snapshot(const struct dev *d, const void *p, uint64_t *pfns)
{
	snapshot_range(d->dev, va(p), NPAGES, pfns);
}

/* Layout of the snapshot's file, in 8-page groups of its 64 pages. */
enum { UNTOUCHED = 0, NOACCESS = 8, READ = 16, READONLY = 24, WRITTEN = 32, ON_DEVICE = 48 };

static void expect_words(const uint64_t *pfns, const unsigned char *p, uint64_t first,
			 uint64_t n, uint64_t want, const char *what)
{
	for (uint64_t i = first; i < first + n; i++) {
		uint64_t flags = pfns[i] & HMM_PFN_FLAGS;

		cr_assert_eq(flags, want, "%s: page %lu has flags %#llx, not %#llx", what,
			     (unsigned long)i, (unsigned long long)flags, (unsigned long long)want);
		if (want & HMM_PFN_VALID)
			cr_assert_eq(hmm_pfn_to_addr(pfns[i]), p + i * PS,
				     "%s: page %lu is not at its own address", what, (unsigned long)i);
	}
}

/*
 * Kernel: snapshot, on a shared mapping of a file: pages never touched by
 * this process are absent (0), a PROT_NONE part is an error, pages the CPU
 * mapped are present at their own address (writable in a writable shared
 * mapping, hmm_range_fault(3) NOTES; not in a PROT_READ part), and pages
 * on a device are present for that device at its memory, which holds their
 * data, and absent for the other device.
 */
static void snapshot_of_a_mapped_file(unsigned holder)
{
	unsigned other = holder == PRIV ? COH : PRIV;
	struct file f = file_map("snap", 19, O_RDWR, PROT_READ | PROT_WRITE);
	struct dev d[2] = { dev_attach(PRIV), dev_attach(COH) };
	uint64_t *pfns = calloc(NPAGES, sizeof(*pfns));
	struct hmm_migrate r;

	cr_assert_not_null(pfns);
	cr_assert_eq(hmm_file_migrate(f.fd, ON_DEVICE * PS, (NPAGES - ON_DEVICE) * PS, holder, &r),
		     0);
	cr_assert_eq(r.moved, NPAGES - ON_DEVICE);
	cr_assert_eq(mprotect(f.p + NOACCESS * PS, 8 * PS, PROT_NONE), 0);
	cr_assert_eq(mprotect(f.p + READONLY * PS, 8 * PS, PROT_READ), 0);
	cpu_expect(f.p + READ * PS, 16 * PS, READ * PS, 19, "the CPU's read");
	pattern_fill(f.p + WRITTEN * PS, 16 * PS, WRITTEN * PS, 20);

	snapshot(&d[holder], f.p, pfns);
	expect_words(pfns, f.p, UNTOUCHED, 8, 0, "untouched");
	expect_words(pfns, f.p, NOACCESS, 8, HMM_PFN_ERROR, "PROT_NONE");
	expect_words(pfns, f.p, READ, 8, HMM_PFN_VALID | HMM_PFN_WRITE, "read");
	expect_words(pfns, f.p, READONLY, 8, HMM_PFN_VALID, "PROT_READ");
	expect_words(pfns, f.p, WRITTEN, 16, HMM_PFN_VALID | HMM_PFN_WRITE, "written");
	for (uint64_t i = ON_DEVICE; i < NPAGES; i++) {
		const unsigned char *at = hmm_pfn_to_addr(pfns[i]);

		cr_assert_eq(pfns[i] & HMM_PFN_FLAGS, HMM_PFN_VALID | HMM_PFN_WRITE,
			     "page %lu on the device", (unsigned long)i);
		cr_assert_neq(at, f.p + i * PS, "page %lu: not at a device address", (unsigned long)i);
		cpu_expect(at, PS, i * PS, 19, "the device memory the snapshot names");
	}
	snapshot(&d[other], f.p, pfns);
	expect_words(pfns, f.p, ON_DEVICE, NPAGES - ON_DEVICE, 0, "on the other device");
	expect_at(f.fd, ON_DEVICE, NPAGES - ON_DEVICE, holder, "after both snapshots");
	free(pfns);
	dev_detach(&d[COH]);
	dev_detach(&d[PRIV]);
	file_unmap(&f);
}

BOTH_VARIANTS(snapshot_of_a_mapped_file, snapshot_of_a_mapped_file_with_pages_on_the_device)
