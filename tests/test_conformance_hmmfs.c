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
 *   file_read                           *_reads_a_mapped_file
 *   file_write (+ dummy: close, remap)  *_writes_a_mapped_file_...
 *   anon_read_prot / anon_write_prot    prot_none_... / read_only_...
 *   migrate                             migrated_pages_...
 *   migrate_fault                       half_faulted_back_...
 *   double_map, migrate across devices  both_devices_...
 *   dummy: ftruncate to half            after_ftruncate_to_half_...
 *   truncation while mapped (dummy)     truncating_pages_the_device_maps_...
 *   anon_write_child_shared             a_child_writing_through_its_own_device_...
 *   snapshot                            snapshot_...
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
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"

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

Test(hmmfs, private_device_reads_a_mapped_file)
{
	device_reads_a_mapped_file(PRIV);
}

Test(hmmfs, coherent_device_reads_a_mapped_file)
{
	device_reads_a_mapped_file(COH);
}

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

Test(hmmfs, private_device_writes_a_mapped_file_and_it_outlives_close_and_remap)
{
	device_writes_a_mapped_file(PRIV);
}

Test(hmmfs, coherent_device_writes_a_mapped_file_and_it_outlives_close_and_remap)
{
	device_writes_a_mapped_file(COH);
}

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
