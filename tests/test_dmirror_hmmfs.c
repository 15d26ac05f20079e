/* SPDX-License-Identifier: MIT */
/*
 * test_dmirror_hmmfs.c - the file scenarios of the kernel's HMM selftest
 * through libhmm_dmirror.so with HMM_DMIRROR_MOUNT (libhmm_dmirror(7)):
 * /dev/hmm_dmirror0 and 1 are the devices of a real hmmfs mount (device 0
 * private, device 1 coherent), and the buffers are files of that mount
 * mapped MAP_SHARED.  As test_dmirror.c, this program knows only the
 * driver's interface (hmm_dmirror.h, never hmm.h) and checks what the
 * driver would answer; the pages of a file are moved, where a scenario
 * needs them on a device, by hmmctl migrate, as a user of the mount would.
 *
 * The process model.  The shim's devices live as long as the process that
 * opened them (libhmm_dmirror(7)), and a device of a mount keeps the mount
 * busy (hmm_device_attach() keeps its path open), so a test process could
 * not unmount a mount it made itself.  So the program, started without the
 * shim, mounts hmmfs first (mount.h's fixture), then runs itself again in
 * a child under LD_PRELOAD=libhmm_dmirror.so with HMM_DMIRROR_MOUNT set,
 * waits for it, unmounts (the daemon must exit 0) and exits with the
 * child's status.  Criterion's runner and its test workers are that child
 * and its descendants: they inherit the preload and the variable, and the
 * tests share the mount (their files' names differ).  The daemon runs
 * without the shim; each test takes LD_PRELOAD out of its environment (the
 * shim is loaded already), so that hmmctl runs without it too.
 *
 *   kernel scenario    test
 *   -----------------  ------------------------------------------------------
 *   file_read          *_file_read_...
 *   file_write         *_file_write_...
 *   migrate (a file)   migrate_to_dev_of_a_shared_file_mapping_...,
 *                      *_pages_the_mount_moved_...
 *   snapshot           *_snapshot_of_a_mapped_file
 *
 * Where the answers differ from the kernel's, and why:
 *  - snapshot: a page of a writable shared file mapping that the CPU has
 *    only read is mapped read-only by the kernel (to track dirtying), and
 *    its driver says PROT_READ; libhmm reports every present page of a
 *    writable shared mapping as writable (hmm_range_fault(3), NOTES), so
 *    the shim says PROT_WRITE.
 *  - migration: the kernel moves no page cache page to device memory, so
 *    its driver's MIGRATE_TO_DEV on a shared file mapping fails with ENOENT;
 *    so does the shim's, which is what migrate_to_dev_... checks.  An hmmfs
 *    file's pages reach a device through the mount instead (hmmctl
 *    migrate); the shim's device then finds them on itself, as the driver
 *    finds pages it migrated: MIGRATE_TO_DEV succeeds and reads them back,
 *    READ uses them in place, SNAPSHOT says DEV_PRIVATE_LOCAL (or
 *    DEV_COHERENT_LOCAL), and the other device sees them as absent.  No
 *    kernel scenario has file pages on a device: those checks are the
 *    mount's own, and MIGRATE_TO_SYS of them is not checked (the driver
 *    would never hold such pages).
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"
#include "dmirror_client.h"

#include <hmm_dmirror.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL
#define NPAGES 64UL
#define LEN (NPAGES * PS)
#define MOUNT_OPTIONS "host_mem=64M,devices=2,device_mem=16M,device_type=private:coherent"

/* ------------------------------------------------- running under the shim */

/*
 * Mount hmmfs, then run this program again with the shim preloaded (behind
 * a sanitizer's runtime, which must come first), with the same arguments,
 * in a child; unmount when it is done and exit with its status.
 */
__attribute__((constructor)) static void under_the_shim(void)
{
	char **argv;
	int status;
	pid_t pid;

	if (getenv("HMM_DMIRROR_TEST_SHIMMED"))
		return;
	argv = shim_own_argv();
	if (hmmfs_test_mount(&mnt, MOUNT_OPTIONS))
		exit(1);
	pid = fork();
	if (pid == 0) {
		setenv("HMM_DMIRROR_MOUNT", mnt.dir, 1);
		shim_exec(argv, DMIRROR_SHIM);
		_exit(127);
	}
	status = pid > 0 && waitpid(pid, &status, 0) == pid ? status : -1;
	if (hmmfs_test_umount(&mnt) != 0) {
		fprintf(stderr, "test_dmirror_hmmfs: hmmfs did not exit cleanly\n");
		exit(1);
	}
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

/* In every test: the mount, whose daemon and tools run without the shim. */
static void setup(void)
{
	const char *dir = getenv("HMM_DMIRROR_MOUNT");

	cr_assert(dir && strlen(dir) < sizeof(mnt.dir));
	strcpy(mnt.dir, dir);
	unsetenv("LD_PRELOAD");
}

TestSuite(dmirror_hmmfs, .init = setup, .timeout = 120);

/* Device 0 (private) and device 1 (coherent) of the mount. */
#define BOTH_DEVICES(scenario, description) \
	Test(dmirror_hmmfs, private_##description) \
	{ \
		scenario(0); \
	} \
	Test(dmirror_hmmfs, coherent_##description) \
	{ \
		scenario(1); \
	}

/* ------------------------------------------------------------ helpers */

struct file {
	int fd;
	unsigned char *p;
	char name[32];
};

/* A file of the mount, named prefix and the device (tests share the
 * mount), with LEN bytes of pattern seed, mapped shared. */
static struct file file_map(const char *prefix, unsigned device, unsigned seed, int flags,
			    int prot)
{
	struct file f;
	int fd;

	snprintf(f.name, sizeof(f.name), "%s%u", prefix, device);
	fd = create_file(f.name);


	write_pattern(fd, 0, LEN, seed);
	close(fd);
	f.fd = open(mp(f.name), flags | O_CLOEXEC);
	cr_assert_geq(f.fd, 0);
	f.p = mmap(NULL, LEN, prot, MAP_SHARED, f.fd, 0);
	cr_assert_neq(f.p, MAP_FAILED, "mmap: %s", strerror(errno));
	return f;
}

static void file_unmap(struct file *f)
{
	cr_assert_eq(munmap(f->p, LEN), 0);
	cr_assert_eq(close(f->fd), 0);
}

static void expect_data(const unsigned char *buf, size_t len, unsigned long long off,
			unsigned seed, const char *what)
{
	long long bad = pattern_check(buf, len, off, seed);

	cr_assert_eq(bad, -1, "%s: wrong byte at %lld", what, bad);
}

/* hmmctl migrate FILE --to devN: the mount moves the file's pages. */
static void mount_migrates(const char *rel, unsigned device)
{
	char to[16];
	const char *argv[] = { "hmmctl", "migrate", mp(rel), "--to", to, NULL };
	struct run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	snprintf(to, sizeof(to), "dev%u", device);
	run_cmd(HMMCTL_BIN, (char *const *)argv, NULL, 20000, r);
	cr_assert_eq(r->status, 0, "hmmctl migrate: %s", r->err);
	free(r);
}

/* ------------------------------------------------------------ file_read, file_write */

/* Kernel: file_read.  The device reads a file written with write(2) and
 * mapped read-only, in one fault round. */
static void file_read(unsigned device)
{
	struct file f = file_map("r", device, 1, O_RDONLY, PROT_READ);
	unsigned char *buf = malloc(LEN);
	struct hmm_dmirror_cmd c;
	int fd = dmirror_open(device);

	cr_assert_not_null(buf);
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_READ, f.p, buf, NPAGES, &c), 0);
	cr_assert_eq(c.cpages, NPAGES);
	cr_assert_eq(c.faults, 1);
	expect_data(buf, LEN, 0, 1, "what the device read");
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_WRITE, f.p, buf, NPAGES, NULL), -EPERM,
		     "a write through the read-only mapping");
	cr_assert_eq(close(fd), 0);
	free(buf);
	file_unmap(&f);
}

BOTH_DEVICES(file_read, file_read_of_a_mapped_file)

/* Kernel: file_write.  The device writes through a shared mapping: the
 * CPU's mapping and read(2) see it, in one fault round, and it stays in the
 * file after munmap and close. */
static void file_write(unsigned device)
{
	struct file f = file_map("w", device, 2, O_RDWR, PROT_READ | PROT_WRITE);
	unsigned char *buf = malloc(LEN);
	struct hmm_dmirror_cmd c;
	int fd = dmirror_open(device);

	cr_assert_not_null(buf);
	pattern_fill(buf, LEN, 0, 3);
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_WRITE, f.p, buf, NPAGES, &c), 0);
	cr_assert_eq(c.cpages, NPAGES);
	cr_assert_eq(c.faults, 1);
	expect_data(f.p, LEN, 0, 3, "the CPU's mapping");
	expect_pattern(f.fd, 0, LEN, 3);
	file_unmap(&f);
	f.fd = open(mp(f.name), O_RDONLY | O_CLOEXEC);
	cr_assert_geq(f.fd, 0);
	expect_pattern(f.fd, 0, LEN, 3);
	cr_assert_eq(close(f.fd), 0);
	cr_assert_eq(close(fd), 0);
	free(buf);
}

BOTH_DEVICES(file_write, file_write_of_a_mapped_file_outlives_close)

/* ------------------------------------------------------------ migration */

/* Kernel: migrate, on a shared file mapping: the driver moves no page of
 * it (ENOENT), and the data and the device's view stay as they were. */
Test(dmirror_hmmfs, migrate_to_dev_of_a_shared_file_mapping_fails_with_enoent)
{
	struct file f = file_map("m", 0, 4, O_RDWR, PROT_READ | PROT_WRITE);
	unsigned char *buf = malloc(LEN);
	int fd = dmirror_open(0);

	cr_assert_not_null(buf);
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, f.p, buf, NPAGES, NULL), -ENOENT);
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_READ, f.p, buf, NPAGES, NULL), 0);
	expect_data(buf, LEN, 0, 4, "the device's read after the refused migration");
	expect_data(f.p, LEN, 0, 4, "the CPU's read after the refused migration");
	expect_pattern(f.fd, 0, LEN, 4);
	cr_assert_eq(close(fd), 0);
	free(buf);
	file_unmap(&f);
}

/* The mount's device holds the file's pages: the shim's device of the same
 * index finds them on itself (MIGRATE_TO_DEV has nothing to move and reads
 * them back) and reads them in place, and the CPU's read, afterwards, gets
 * the same data. */
static void pages_the_mount_moved(unsigned device)
{
	struct file f = file_map("mm", device, 5, O_RDWR, PROT_READ | PROT_WRITE);
	unsigned char *buf = malloc(LEN), *snap = malloc(NPAGES);
	uint8_t local = device ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL
			       : HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	struct hmm_dmirror_cmd c;
	int fd = dmirror_open(device);

	cr_assert(buf && snap);
	mount_migrates(f.name, device);
	memset(buf, 0, LEN);
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, f.p, buf, NPAGES, &c), 0);
	cr_assert_eq(c.cpages, NPAGES);
	expect_data(buf, LEN, 0, 5, "what MIGRATE_TO_DEV read back");
	memset(buf, 0, LEN);
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_READ, f.p, buf, NPAGES, NULL), 0);
	expect_data(buf, LEN, 0, 5, "the device's read in place");
	cr_assert_eq(dmirror_cmd(fd, HMM_DMIRROR_SNAPSHOT, f.p, snap, NPAGES, NULL), 0);
	for (size_t i = 0; i < NPAGES; i++)
		cr_assert_eq(snap[i], local | HMM_DMIRROR_PROT_WRITE,
			     "page %zu: snapshot byte %#x", i, snap[i]);
	expect_data(f.p, LEN, 0, 5, "the CPU's read");
	cr_assert_eq(close(fd), 0);
	free(snap);
	free(buf);
	file_unmap(&f);
}

BOTH_DEVICES(pages_the_mount_moved, pages_the_mount_moved_are_the_devices_own)

/* ------------------------------------------------------------ snapshot */

/* Kernel: snapshot, on a shared mapping of a file: untouched pages are
 * PROT_NONE, a PROT_NONE part is PROT_ERROR, pages the CPU mapped are
 * READ or WRITE as their mapping (see the header for a page only read),
 * and pages on a device are that device's own, absent for the other. */
static void snapshot(unsigned device)
{
	struct file f = file_map("snap", device, 6, O_RDWR, PROT_READ | PROT_WRITE);
	uint8_t local = device ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL
			       : HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	unsigned char *snap = malloc(NPAGES);
	int fd = dmirror_open(device), other = dmirror_open(!device);
	struct hmm_run {
		size_t first, n;
		uint8_t want, want_other;
	} runs[] = {
		{ 0, 8, HMM_DMIRROR_PROT_NONE, HMM_DMIRROR_PROT_NONE },
		{ 8, 8, HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_ERROR },
		{ 16, 8, HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_WRITE },
		{ 24, 8, HMM_DMIRROR_PROT_READ, HMM_DMIRROR_PROT_READ },
		{ 32, 16, HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_WRITE },
		{ 48, 16, local | HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_NONE },
	};
	char to[16];
	const char *argv[] = { "hmmctl", "migrate", mp(f.name), "--to", to, "--offset",
			       "196608", NULL };
	struct run *r = malloc(sizeof(*r));

	cr_assert(snap && r);
	snprintf(to, sizeof(to), "dev%u", device);
	run_cmd(HMMCTL_BIN, (char *const *)argv, NULL, 20000, r);
	cr_assert_eq(r->status, 0, "hmmctl migrate: %s", r->err);
	cr_assert_eq(mprotect(f.p + 8 * PS, 8 * PS, PROT_NONE), 0);
	cr_assert_eq(mprotect(f.p + 24 * PS, 8 * PS, PROT_READ), 0);
	expect_data(f.p + 16 * PS, 16 * PS, 16 * PS, 6, "the CPU's read");
	pattern_fill(f.p + 32 * PS, 16 * PS, 32 * PS, 7);
	for (int dev = 0; dev < 2; dev++) {
		cr_assert_eq(dmirror_cmd(dev ? other : fd, HMM_DMIRROR_SNAPSHOT, f.p, snap, NPAGES, NULL),
			     0);
		for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++)
			for (size_t i = runs[k].first; i < runs[k].first + runs[k].n; i++)
				cr_assert_eq(snap[i], dev ? runs[k].want_other : runs[k].want,
					     "%s device, page %zu: snapshot byte %#x",
					     dev ? "the other" : "the holding", i, snap[i]);
	}
	cr_assert_eq(close(other), 0);
	cr_assert_eq(close(fd), 0);
	free(r);
	free(snap);
	file_unmap(&f);
}

BOTH_DEVICES(snapshot, snapshot_of_a_mapped_file)
