/* SPDX-License-Identifier: MIT */
/*
 * test_conformance_dummy.c - the scenarios of the test suite that came with
 * the original HMM author's 2015 dummy driver, ported to libhmm's own API:
 * a device (an embedded one, 64 MiB) mirrors the process and reads and
 * writes its memory with hmm_mirror_read() and hmm_mirror_write().
 *
 *   dummy scenario                          here
 *   --------------------------------------  ----------------------------------
 *   device read and write, anonymous        ..._reads_and_writes_anonymous_memory
 *   write to a PROT_READ buffer             ..._read_only_buffer_...
 *   PROT_NONE read and write                prot_none_...
 *   fork copy-on-write                      after_fork_...
 *   file mapping, kept after close/remap    a_shared_file_mapping_...
 *   ftruncate to half                       after_ftruncate_...
 *   shared mapping across fork              a_shared_mapping_...
 *   migrate, then device read and write     migrated_pages_...
 *   512 buffers of 2 MiB, eviction          more_buffers_than_device_memory_...
 *   reader racing munmap, 1024 rounds       a_device_read_racing_munmap_...
 *
 * The dummy driver evicted its own memory when full.  libhmm leaves that
 * to the driver for anonymous memory (hmm_migrate_to_device() moves what
 * fits and answers -ENOSPC), so the stress test evicts the oldest buffers
 * with hmm_migrate_to_ram(), as such a driver would.
 */
#define _GNU_SOURCE
#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "rng.h"

#define PS 4096UL
#define NPAGES 64UL
#define LEN (NPAGES * PS)
#define DEVICE_MEMORY (64UL << 20)

static struct hmm_device *dev;
static struct hmm_mirror *mir;

static void setup(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = DEVICE_MEMORY, .numa_node = -1 };

	cr_assert_eq(hmm_device_create(&cfg, &dev), 0);
	cr_assert_eq(hmm_mirror_create(dev, &mir), 0);
}

static void teardown(void)
{
	hmm_mirror_destroy(mir);
	cr_assert_eq(hmm_device_destroy(dev), 0);
}

TestSuite(dummy, .init = setup, .fini = teardown, .timeout = 300);

static struct hmm_mirror_stats mstats(void)
{
	struct hmm_mirror_stats st;

	cr_assert_eq(hmm_mirror_stats(mir, &st), 0);
	return st;
}

static struct hmm_device_stats dstats(void)
{
	struct hmm_device_stats st;

	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	return st;
}

static uint64_t va(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static void *map(size_t len, int prot, int flags)
{
	void *p = mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
	return p;
}

static void fill(void *p, size_t len, unsigned seed)
{
	unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		c[i] = (unsigned char)(i * 7 + seed + i / PS);
}

static bool holds(const void *p, size_t len, unsigned seed)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i] != (unsigned char)(i * 7 + seed + i / PS))
			return false;
	return true;
}

static void expect(const void *p, size_t len, unsigned seed, const char *what)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i] != (unsigned char)(i * 7 + seed + i / PS))
			cr_assert_fail("%s: byte %zu is 0x%02x, not 0x%02x", what, i, c[i],
				       (unsigned char)(i * 7 + seed + i / PS));
}

/* The device reads len bytes at p, which must succeed and hold seed's data. */
static void device_expect(const void *p, size_t len, unsigned seed, const char *what)
{
	unsigned char *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	rc = hmm_mirror_read(mir, va(p), buf, len);
	cr_assert_eq(rc, 0, "%s: hmm_mirror_read: %s", what, strerror(-rc));
	expect(buf, len, seed, what);
	free(buf);
}

/* The device writes seed's data at p, which must succeed. */
static void device_fill(void *p, size_t len, unsigned seed)
{
	unsigned char *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	fill(buf, len, seed);
	rc = hmm_mirror_write(mir, va(p), buf, len);
	cr_assert_eq(rc, 0, "hmm_mirror_write: %s", strerror(-rc));
	free(buf);
}

Test(dummy, the_device_reads_and_writes_anonymous_memory)
{
	unsigned char *p = map(LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill(p, LEN, 1);
	device_expect(p, LEN, 1, "the device's read");
	cr_assert_eq(mstats().faults, 1, "one fault round for the whole buffer");
	device_fill(p, LEN, 2);
	expect(p, LEN, 2, "the CPU's read of the device's write");
	device_expect(p, LEN, 2, "the device's read of its write");
	cr_assert_eq(munmap(p, LEN), 0);
}

Test(dummy, a_device_write_to_a_read_only_buffer_fails_and_changes_nothing)
{
	unsigned char *p = map(LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned char *buf = malloc(LEN);

	fill(p, LEN, 3);
	cr_assert_eq(mprotect(p, LEN, PROT_READ), 0);
	device_expect(p, LEN, 3, "the device's read of the read-only buffer");
	fill(buf, LEN, 4);
	cr_assert_eq(hmm_mirror_write(mir, va(p), buf, LEN), -EPERM);
	expect(p, LEN, 3, "the read-only buffer after the refused write");
	device_expect(p, LEN, 3, "the device's read after the refused write");
	free(buf);
	cr_assert_eq(munmap(p, LEN), 0);
}

Test(dummy, prot_none_fails_device_reads_and_writes_and_keeps_the_data)
{
	unsigned char *p = map(LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	unsigned char *buf = malloc(LEN);

	fill(p, LEN, 5);
	device_expect(p, LEN, 5, "before PROT_NONE"); /* the device holds the pages */
	cr_assert_eq(mprotect(p, LEN, PROT_NONE), 0);
	memset(buf, 0xaa, LEN);
	cr_assert_eq(hmm_mirror_read(mir, va(p), buf, LEN), -EFAULT);
	for (size_t i = 0; i < LEN; i++)
		cr_assert_eq(buf[i], 0xaa, "the failed read gave byte %zu", i);
	fill(buf, LEN, 6);
	cr_assert_eq(hmm_mirror_write(mir, va(p), buf, LEN), -EFAULT);
	cr_assert_eq(mprotect(p, LEN, PROT_READ), 0);
	expect(p, LEN, 5, "the data after the failed accesses");
	free(buf);
	cr_assert_eq(munmap(p, LEN), 0);
}

/*
 * fork() makes the private pages copy-on-write: the parent's device writes
 * after the fork must not reach the child, nor the child's CPU writes the
 * parent, although the device mapped the pages writable before.
 */
/* A child that runs body(p, b) and exits with what it returns. */
static pid_t start_child(int (*body)(unsigned char *, pthread_barrier_t *), unsigned char *p,
			 pthread_barrier_t *b)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(body(p, b));
	return pid;
}

/* The child must exit with 0; else it failed for the reason given. */
static void expect_child_ok(pid_t pid, const char *failure)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child %s (status 0x%x)",
		  failure, status);
}

/* It waits for the parent's device write, checks it did not see it, and
 * writes its own copy while the parent looks at its own. */
static int cow_child(unsigned char *p, pthread_barrier_t *b)
{
	int bad;

	pthread_barrier_wait(b);   /* the parent's device wrote */
	bad = !holds(p, LEN, 8);
	fill(p, LEN, 10);
	pthread_barrier_wait(b);   /* the child wrote */
	pthread_barrier_wait(b);   /* the parent looked */
	return bad || !holds(p, LEN, 10);
}

Test(dummy, after_fork_device_writes_and_child_writes_stay_on_their_side)
{
	unsigned char *p = map(LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	pthread_barrier_t *b = shared_barrier(2);
	pid_t pid;

	fill(p, LEN, 7);
	device_fill(p, LEN, 8); /* writable device entries */
	pid = start_child(cow_child, p, b);
	device_fill(p, LEN, 9);
	pthread_barrier_wait(b);
	pthread_barrier_wait(b);
	device_expect(p, LEN, 9, "the parent's device after the child wrote");
	expect(p, LEN, 9, "the parent's CPU after the child wrote");
	pthread_barrier_wait(b);
	expect_child_ok(pid, "saw the parent's device write, or lost its own");
	cr_assert_eq(munmap(p, LEN), 0);
}

/* It sees the device's write, writes, and sees the device's next write. */
static int shared_child(unsigned char *p, pthread_barrier_t *b)
{
	int bad = !holds(p, LEN, 11);

	fill(p, LEN, 12);
	pthread_barrier_wait(b);   /* the child wrote */
	pthread_barrier_wait(b);   /* the parent's device wrote */
	return bad || !holds(p, LEN, 13);
}

/* A shared mapping is one memory for both processes and the device. */
Test(dummy, a_shared_mapping_is_seen_by_the_device_and_the_child_alike)
{
	unsigned char *p = map(LEN, PROT_READ | PROT_WRITE, MAP_SHARED);
	pthread_barrier_t *b = shared_barrier(2);
	pid_t pid;

	device_fill(p, LEN, 11);
	pid = start_child(shared_child, p, b);
	pthread_barrier_wait(b);
	device_expect(p, LEN, 12, "the parent's device reading the child's write");
	device_fill(p, LEN, 13);
	pthread_barrier_wait(b);
	expect_child_ok(pid, "did not see the device's writes");
	expect(p, LEN, 13, "the parent's CPU");
	cr_assert_eq(munmap(p, LEN), 0);
}

/* A temporary file of len bytes; its path in path (PATH_MAX). */
static int temp_file(char *path, size_t len)
{
	int fd;

	strcpy(path, "/tmp/hmm-dummy-XXXXXX");
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)len), 0);
	return fd;
}

Test(dummy, a_shared_file_mapping_takes_device_writes_that_outlive_close_and_remap)
{
	char path[64];
	int fd = temp_file(path, LEN);
	unsigned char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	unsigned char *buf = malloc(LEN);

	cr_assert_neq(p, MAP_FAILED);
	device_fill(p, LEN, 14);
	expect(p, LEN, 14, "the CPU's read of the mapping");
	cr_assert_eq(munmap(p, LEN), 0);
	cr_assert_eq(close(fd), 0);

	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, buf, LEN, 0), (ssize_t)LEN);
	expect(buf, LEN, 14, "the file after close");
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	device_expect(p, LEN, 14, "the device's read of the new mapping");
	device_fill(p, LEN, 15);
	cr_assert_eq(munmap(p, LEN), 0);
	cr_assert_eq(pread(fd, buf, LEN, 0), (ssize_t)LEN);
	expect(buf, LEN, 15, "the file after the second write");
	free(buf);
	close(fd);
	unlink(path);
}

Test(dummy, after_ftruncate_to_half_the_device_cannot_read_the_second_half)
{
	char path[64];
	int fd = temp_file(path, 0);
	unsigned char *p, *buf = malloc(LEN);

	fill(buf, LEN, 16);
	cr_assert_eq(pwrite(fd, buf, LEN, 0), (ssize_t)LEN);
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	device_expect(p, LEN, 16, "before the truncation");
	cr_assert_eq(ftruncate(fd, LEN / 2), 0);
	cr_assert_eq(hmm_mirror_read(mir, va(p + LEN / 2), buf, LEN / 2), -EFAULT);
	cr_assert_eq(hmm_mirror_read(mir, va(p + LEN - PS), buf, PS), -EFAULT, "the last page");
	cr_assert_eq(hmm_mirror_write(mir, va(p + LEN / 2), buf, PS), -EFAULT);
	/* A read across the end gets the first half, then fails. */
	memset(buf, 0, LEN);
	cr_assert_eq(hmm_mirror_read(mir, va(p), buf, LEN), -EFAULT);
	expect(buf, LEN / 2, 16, "the first half of the read across the end");
	device_expect(p, LEN / 2, 16, "the first half");
	cr_assert_eq(munmap(p, LEN), 0);
	free(buf);
	close(fd);
	unlink(path);
}

Test(dummy, migrated_pages_are_read_and_written_by_the_device_in_place)
{
	unsigned char *p = map(LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t moved = 0;

	fill(p, LEN, 17);
	cr_assert_eq(hmm_migrate_to_device(dev, p, LEN, &moved), 0);
	cr_assert_eq(moved, NPAGES);
	device_expect(p, LEN, 17, "the device's read of its memory");
	device_fill(p, LEN, 18);
	cr_assert_eq(dstats().cpu_faults, 0, "the device used its memory in place");
	cr_assert_eq(dstats().used, LEN);
	expect(p, LEN, 18, "the CPU's read of the device's write");
	cr_assert_eq(dstats().cpu_faults, NPAGES);
	cr_assert_eq(dstats().used, 0);
	cr_assert_eq(munmap(p, LEN), 0);
}

/*
 * 512 buffers of 2 MiB (1 GiB) pass through a device of 64 MiB: each is
 * written, migrated, and read by the device; when the device is full the
 * oldest buffers are evicted to host RAM.  At the end the device and then
 * the CPU read every buffer back.
 */
#define STRESS_BUFFERS 512
#define STRESS_LEN (2UL << 20)

Test(dummy, more_buffers_than_device_memory_evict_and_all_read_back)
{
	unsigned char **b = calloc(STRESS_BUFFERS, sizeof(*b));
	size_t oldest = 0, evicted = 0;

	cr_assert_not_null(b);
	for (size_t i = 0; i < STRESS_BUFFERS; i++) {
		uint64_t moved = 0, total = 0;
		int rc;

		b[i] = map(STRESS_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE);
		fill(b[i], STRESS_LEN, (unsigned)i);
		while ((rc = hmm_migrate_to_device(dev, b[i], STRESS_LEN, &moved)) == -ENOSPC) {
			uint64_t back = 0;

			total += moved;
			cr_assert_lt(oldest, i, "buffer %zu: no room although all others left", i);
			cr_assert_eq(hmm_migrate_to_ram(b[oldest], STRESS_LEN, &back), 0);
			cr_assert_eq(back, STRESS_LEN / PS, "buffer %zu was on the device", oldest);
			oldest++;
			evicted++;
		}
		total += moved;
		cr_assert_eq(rc, 0, "buffer %zu: %s", i, strerror(-rc));
		cr_assert_eq(total, STRESS_LEN / PS, "buffer %zu moved %llu pages", i,
			     (unsigned long long)total);
		cr_assert_leq(dstats().used, DEVICE_MEMORY);
		device_expect(b[i], STRESS_LEN, (unsigned)i, "a buffer just migrated");
	}
	cr_assert_geq(evicted, STRESS_BUFFERS - DEVICE_MEMORY / STRESS_LEN);
	for (size_t i = 0; i < STRESS_BUFFERS; i++)
		device_expect(b[i], STRESS_LEN, (unsigned)i, "the device's final read");
	for (size_t i = 0; i < STRESS_BUFFERS; i++) {
		expect(b[i], STRESS_LEN, (unsigned)i, "the CPU's final read");
		cr_assert_eq(munmap(b[i], STRESS_LEN), 0);
	}
	cr_assert_eq(dstats().used, 0);
	cr_log_info("%zu evictions", evicted);
	free(b);
}

/*
 * A device read races munmap of the buffer, which comes after a random
 * delay of up to 32 µs, 1024 times.  A read that succeeds has the right
 * data; one that fails says -EFAULT; no device entry outlives the munmap.
 * The buffer lives far below every other mapping (a fixed low address):
 * the test runner's threads, and sanitizers, map memory of their own
 * meanwhile, and one that landed where the munmap just made room would
 * rightly be read and mapped by the device.  The first of these addresses
 * that is free: 64 GiB (in ThreadSanitizer's low 512 GiB for programs),
 * 1 GiB (below AddressSanitizer's shadow, which covers 64 GiB).
 */
#define RACE_ROUNDS 1024
static const uintptr_t race_addrs[] = { 0x1000000000UL, 0x40000000UL };

/* The buffer, mapped at the first free race address. */
static unsigned char *race_map(void)
{
	for (size_t i = 0; i < sizeof(race_addrs) / sizeof(race_addrs[0]); i++) {
		void *p = mmap((void *)race_addrs[i], LEN, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (p != MAP_FAILED)
			return p;
	}
	cr_assert_fail("no low address is free for the race buffer: %s", strerror(errno));
	return NULL;
}

struct race {
	unsigned char *p;
	unsigned char *buf;
	int rc;
};

static void *race_reader(void *arg)
{
	struct race *r = arg;

	r->rc = hmm_mirror_read(mir, va(r->p), r->buf, LEN);
	return NULL;
}

Test(dummy, a_device_read_racing_munmap_gets_the_data_or_efault)
{
	uint64_t seed = (uint64_t)time(NULL) | 1;
	struct race r = { .buf = malloc(LEN) };
	unsigned ok = 0, failed = 0;

	cr_assert_not_null(r.buf);
	rng_state = seed;
	cr_log_info("seed %llu", (unsigned long long)seed);
	for (unsigned round = 0; round < RACE_ROUNDS; round++) {
		struct timespec delay = { 0, (long)(rng() % 32000) };
		pthread_t t;

		r.p = race_map();
		fill(r.p, LEN, round);
		r.rc = 1;
		cr_assert_eq(pthread_create(&t, NULL, race_reader, &r), 0);
		nanosleep(&delay, NULL);
		cr_assert_eq(munmap(r.p, LEN), 0);
		pthread_join(t, NULL);
		if (r.rc == 0) {
			expect(r.buf, LEN, round, "a read that won the race");
			ok++;
		} else {
			cr_assert_eq(r.rc, -EFAULT, "round %u: %s", round, strerror(-r.rc));
			failed++;
		}
		cr_assert_eq(mstats().mapped_pages, 0, "round %u: device entries outlived munmap",
			     round);
	}
	cr_log_info("%u reads won, %u lost to munmap", ok, failed);
	free(r.buf);
}
