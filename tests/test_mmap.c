/* SPDX-License-Identifier: MIT */
/*
 * test_mmap.c - shared writable mappings are coherent with read, write,
 * msync, ftruncate, fallocate and copy_file_range, within a process and
 * across processes, as on tmpfs.  Children report through their exit status
 * (Criterion assertions belong to the test process only).
 */
#define _GNU_SOURCE
#include "mount.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/falloc.h>

TestSuite(mmap, .init = mnt_setup, .fini = mnt_teardown);

static long page(void)
{
	return sysconf(_SC_PAGESIZE);
}

static int create_file(const char *rel, long long size)
{
	int fd = open(mp(rel), O_RDWR | O_CREAT | O_EXCL, 0644);

	cr_assert_geq(fd, 0, "create %s: %s", rel, strerror(errno));
	cr_assert_eq(ftruncate(fd, size), 0, "ftruncate: %s", strerror(errno));
	return fd;
}

static unsigned char *map_shared(int fd, size_t len)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	cr_assert_neq(m, MAP_FAILED, "mmap: %s", strerror(errno));
	return m;
}

static struct stat fd_stat(int fd)
{
	struct stat st;

	cr_assert_eq(fstat(fd, &st), 0);
	return st;
}

static int is_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

/* pread len bytes at off; 0 if they carry the pattern (seed), else -1. */
static int file_has_pattern(int fd, long long off, size_t len, unsigned seed)
{
	unsigned char *buf = malloc(len);
	int ok;

	if (!buf)
		return -1;
	ok = pread(fd, buf, len, off) == (ssize_t)len && pattern_check(buf, len, off, seed) < 0;
	free(buf);
	return ok ? 0 : -1;
}

static int file_is_zero(int fd, long long off, size_t len)
{
	unsigned char *buf = malloc(len);
	int ok;

	if (!buf)
		return -1;
	memset(buf, 0xee, len);
	ok = pread(fd, buf, len, off) == (ssize_t)len && is_zero(buf, len);
	free(buf);
	return ok ? 0 : -1;
}

static void write_pattern(int fd, long long off, size_t len, unsigned seed)
{
	unsigned char *buf = malloc(len);

	cr_assert_not_null(buf);
	pattern_fill(buf, len, off, seed);
	cr_assert_eq(pwrite(fd, buf, len, off), (ssize_t)len, "pwrite: %s", strerror(errno));
	free(buf);
}

/* Run fn(arg) in a child; return its wait status. */
static int in_child(int (*fn)(void *), void *arg)
{
	int status;
	pid_t pid = fork();

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };

		setrlimit(RLIMIT_CORE, &no_core);
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		_exit(fn(arg));
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

static void expect_child_ok(int status, const char *what)
{
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "%s: child %s %d", what, WIFEXITED(status) ? "exited with" : "killed by signal",
		  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

static pthread_barrier_t *shared_barrier(unsigned count)
{
	pthread_barrierattr_t attr;
	pthread_barrier_t *b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(b, MAP_FAILED);
	pthread_barrierattr_init(&attr);
	pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	cr_assert_eq(pthread_barrier_init(b, &attr, count), 0);
	pthread_barrierattr_destroy(&attr);
	return b;
}

/* ---------------------------------------------------------------- coherence */

struct region {
	const char *rel;
	long long off;
	size_t len;
	unsigned seed;
	unsigned char *map;
	pthread_barrier_t *barrier;
};

static int child_reads_pattern(void *arg)
{
	struct region *r = arg;
	int fd = open(mp(r->rel), O_RDONLY);

	if (fd < 0)
		return 10;
	return file_has_pattern(fd, r->off, r->len, r->seed) ? 11 : 0;
}

static int child_stores_pattern(void *arg)
{
	struct region *r = arg;
	int fd = open(mp(r->rel), O_RDWR);
	unsigned char *m;

	if (fd < 0)
		return 10;
	m = mmap(NULL, r->off + r->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 11;
	pattern_fill(m + r->off, r->len, r->off, r->seed);
	/* No msync: the parent must see the stores through the page cache. */
	munmap(m, r->off + r->len);
	close(fd);
	return 0;
}

Test(mmap, stores_through_a_shared_mapping_are_visible_to_read_at_once)
{
	long p = page();
	int fd = create_file("f", 4 * p), fd2;
	unsigned char *m = map_shared(fd, 4 * p);
	struct region r = { "f", 100, 2 * p, 1, NULL, NULL };

	pattern_fill(m + 100, 2 * p, 100, 1);
	fd2 = open(mp("f"), O_RDONLY);
	cr_assert_geq(fd2, 0);
	cr_assert_eq(file_has_pattern(fd2, 100, 2 * p, 1), 0, "read in the same process");
	cr_assert_eq(file_is_zero(fd2, 0, 100), 0);
	cr_assert_eq(file_is_zero(fd2, 2 * p + 100, 2 * p - 100), 0);
	expect_child_ok(in_child(child_reads_pattern, &r), "read in another process");

	/* And the other way round: a child stores, the parent reads and sees it mapped. */
	r = (struct region){ "f", 3 * p - 7, p + 7, 2, NULL, NULL };
	expect_child_ok(in_child(child_stores_pattern, &r), "store in another process");
	cr_assert_eq(file_has_pattern(fd2, 3 * p - 7, p + 7, 2), 0);
	cr_assert_eq(pattern_check(m + 3 * p - 7, p + 7, 3 * p - 7, 2), -1,
		     "the parent's mapping shows the child's stores");
	cr_assert_eq(pattern_check(m + 100, 2 * p - 107, 100, 1), -1);
	munmap(m, 4 * p);
	close(fd2);
	close(fd);
}

static int child_writes_then_checks_mapping(void *arg)
{
	struct region *r = arg;

	/* The mapping was made by the parent before the fork. */
	pthread_barrier_wait(r->barrier); /* parent has written */
	return pattern_check(r->map + r->off, r->len, r->off, r->seed) < 0 ? 0 : 12;
}

Test(mmap, write_is_visible_through_an_existing_mapping)
{
	long p = page();
	int fd = create_file("f", 3 * p);
	unsigned char *m = map_shared(fd, 3 * p);
	struct region r = { "f", p - 5, p + 10, 3, m, shared_barrier(2) };
	pid_t pid;
	int status;

	cr_assert(is_zero(m, 3 * p), "a fresh file maps as zeros");
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(child_writes_then_checks_mapping(&r));
	write_pattern(fd, p - 5, p + 10, 3);
	cr_assert_eq(pattern_check(m + p - 5, p + 10, p - 5, 3), -1, "own mapping");
	cr_assert(is_zero(m, p - 5));
	cr_assert(is_zero(m + 2 * p + 5, p - 5));
	pthread_barrier_wait(r.barrier);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	expect_child_ok(status, "the child's inherited mapping");
	munmap(m, 3 * p);
	close(fd);
}

Test(mmap, msync_then_close_and_reopen_keeps_the_stored_data)
{
	long p = page();
	int fd = create_file("f", 4 * p);
	unsigned char *m = map_shared(fd, 4 * p);

	pattern_fill(m + p, 3 * p, p, 4);
	cr_assert_eq(msync(m, 4 * p, MS_SYNC), 0, "msync: %s", strerror(errno));
	cr_assert_eq(munmap(m, 4 * p), 0);
	cr_assert_eq(fd_stat(fd).st_blocks, 3 * p / 512, "the three stored pages are allocated");
	close(fd);

	fd = open(mp("f"), O_RDWR);
	cr_assert_geq(fd, 0);
	/* Drop the page cache so that the data comes back from the filesystem. */
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	cr_assert_eq(fd_stat(fd).st_size, 4 * p);
	cr_assert_eq(file_is_zero(fd, 0, p), 0);
	cr_assert_eq(file_has_pattern(fd, p, 3 * p, 4), 0);
	close(fd);
}

Test(mmap, stored_data_survives_munmap_and_remapping)
{
	long p = page();
	int fd = create_file("f", 5 * p + 3);
	unsigned char *m = map_shared(fd, 5 * p + 3);

	pattern_fill(m, 5 * p + 3, 0, 5);
	cr_assert_eq(munmap(m, 5 * p + 3), 0);
	m = map_shared(fd, 5 * p + 3);
	cr_assert_eq(pattern_check(m, 5 * p + 3, 0, 5), -1, "remapped through the same fd");
	cr_assert_eq(munmap(m, 5 * p + 3), 0);
	close(fd);

	fd = open(mp("f"), O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	m = map_shared(fd, 5 * p + 3);
	cr_assert_eq(pattern_check(m, 5 * p + 3, 0, 5), -1, "remapped through a new fd");
	cr_assert_eq(file_has_pattern(fd, 0, 5 * p + 3, 5), 0);
	munmap(m, 5 * p + 3);
	close(fd);
}

/* ---------------------------------------------------------------- truncate */

static int child_touches(void *arg)
{
	volatile unsigned char *addr = arg;

	(void)*addr;
	return 20; /* reached only if there was no SIGBUS */
}

static int child_stores(void *arg)
{
	volatile unsigned char *addr = arg;

	*addr = 1;
	return 20;
}

static int child_checks_partial_page(void *arg)
{
	struct region *r = arg;
	long p = page();

	/* Inside the page that holds EOF: the data, then zeros, no signal. */
	if (pattern_check(r->map, r->off, 0, r->seed) >= 0)
		return 21;
	if (!is_zero(r->map + r->off, p - r->off % p))
		return 22;
	return 0;
}

static void expect_sigbus(int status, const char *what)
{
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
		  "%s: expected SIGBUS, child %s %d", what,
		  WIFEXITED(status) ? "exited with" : "was killed by signal",
		  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

Test(mmap, access_beyond_eof_after_ftruncate_shrink_raises_sigbus)
{
	long p = page();
	int fd = create_file("f", 4 * p);
	unsigned char *m = map_shared(fd, 4 * p);
	struct region r = { "f", p + 10, 0, 6, m, NULL };

	pattern_fill(m, 4 * p, 0, 6);
	cr_assert_eq(ftruncate(fd, p + 10), 0);
	expect_child_ok(in_child(child_checks_partial_page, &r), "the page holding EOF");
	expect_sigbus(in_child(child_touches, m + 2 * p), "load from the first page past EOF");
	expect_sigbus(in_child(child_touches, m + 4 * p - 1), "load from the last mapped byte");
	expect_sigbus(in_child(child_stores, m + 3 * p), "store past EOF");
	cr_assert_eq(fd_stat(fd).st_size, p + 10, "a store past EOF does not extend the file");
	munmap(m, 4 * p);
	close(fd);
}

Test(mmap, ftruncate_shrink_then_grow_shows_zeros_through_the_mapping)
{
	long p = page();
	int fd = create_file("f", 4 * p);
	unsigned char *m = map_shared(fd, 4 * p);

	pattern_fill(m, 4 * p, 0, 7);
	cr_assert_eq(ftruncate(fd, p + 10), 0);
	cr_assert_eq(ftruncate(fd, 4 * p), 0);
	cr_assert_eq(pattern_check(m, p + 10, 0, 7), -1);
	cr_assert(is_zero(m + p + 10, 3 * p - 10), "the regrown part, partial page included");
	cr_assert_eq(file_is_zero(fd, p + 10, 3 * p - 10), 0);
	cr_assert_eq(file_has_pattern(fd, 0, p + 10, 7), 0);

	/* The same with truncate(2) by path, all the way down to zero. */
	pattern_fill(m, 4 * p, 0, 8);
	cr_assert_eq(truncate(mp("f"), 0), 0);
	cr_assert_eq(truncate(mp("f"), 4 * p), 0);
	cr_assert(is_zero(m, 4 * p));
	cr_assert_eq(file_is_zero(fd, 0, 4 * p), 0);
	munmap(m, 4 * p);
	close(fd);
}

Test(mmap, ftruncate_grow_makes_the_mapped_area_past_old_eof_usable_and_zero)
{
	long p = page();
	int fd = create_file("f", 0), fd2;
	unsigned char *m;

	write_pattern(fd, 0, p / 2, 9);
	m = map_shared(fd, 4 * p); /* longer than the file */
	cr_assert_eq(ftruncate(fd, 4 * p), 0);
	cr_assert_eq(pattern_check(m, p / 2, 0, 9), -1);
	cr_assert(is_zero(m + p / 2, 4 * p - p / 2));
	pattern_fill(m + 2 * p, 2 * p, 2 * p, 10);
	fd2 = open(mp("f"), O_RDONLY);
	cr_assert_geq(fd2, 0);
	cr_assert_eq(file_has_pattern(fd2, 2 * p, 2 * p, 10), 0);
	close(fd2);
	munmap(m, 4 * p);
	close(fd);
}

/* ---------------------------------------------------------------- two processes */

#define ROUNDS 20

static int child_stores_half_and_checks_all(void *arg)
{
	struct region *r = arg; /* off: which child (0 or 1), len: file size */
	size_t half = r->len / 2;
	int fd = open(mp(r->rel), O_RDWR);
	unsigned char *m;
	int bad = 0;

	if (fd < 0)
		return 30;
	m = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 31;
	for (unsigned round = 0; round < ROUNDS; round++) {
		size_t mine = ((size_t)r->off + round) % 2 * half;

		pthread_barrier_wait(r->barrier);
		pattern_fill(m + mine, half, mine, round);
		pthread_barrier_wait(r->barrier);
		if (pattern_check(m, r->len, 0, round) >= 0)
			bad = 32; /* the mapping misses the other's stores */
		else if (file_has_pattern(fd, 0, r->len, round))
			bad = 33; /* read() misses some stores */
		pthread_barrier_wait(r->barrier);
		if (bad)
			break;
	}
	/* Keep the barrier count right for the other child if we stopped early. */
	for (unsigned i = 0; bad && i < 3 * ROUNDS; i++)
		pthread_barrier_wait(r->barrier);
	munmap(m, r->len);
	close(fd);
	return bad;
}

Test(mmap, two_processes_storing_to_disjoint_halves_both_see_everything)
{
	long p = page();
	int fd = create_file("f", 16 * p), status;
	pthread_barrier_t *b = shared_barrier(2);
	pid_t pids[2];

	for (int i = 0; i < 2; i++) {
		struct region r = { "f", i, 16 * p, 0, NULL, b };

		pids[i] = fork();
		cr_assert_geq(pids[i], 0);
		if (pids[i] == 0)
			_exit(child_stores_half_and_checks_all(&r));
	}
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
		expect_child_ok(status, "storing child");
	}
	cr_assert_eq(file_has_pattern(fd, 0, 16 * p, ROUNDS - 1), 0);
	close(fd);
}

/* ---------------------------------------------------------------- private, unlinked */

Test(mmap, stores_to_a_private_mapping_do_not_change_the_file)
{
	long p = page();
	int fd = create_file("f", 0);
	unsigned char *priv, *shared;

	write_pattern(fd, 0, 2 * p, 11);
	priv = mmap(NULL, 2 * p, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	cr_assert_neq(priv, MAP_FAILED);
	shared = map_shared(fd, 2 * p);
	memset(priv + 10, 0xab, 100);
	memset(priv + p, 0xcd, p);
	cr_assert_eq(priv[10], 0xab);
	cr_assert_eq(priv[p + 5], 0xcd);
	cr_assert_eq(file_has_pattern(fd, 0, 2 * p, 11), 0, "read() shows the file unchanged");
	cr_assert_eq(pattern_check(shared, 2 * p, 0, 11), -1, "a shared mapping too");
	cr_assert_eq(msync(priv, 2 * p, MS_SYNC), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	cr_assert_eq(file_has_pattern(fd, 0, 2 * p, 11), 0, "even after msync");
	cr_assert_eq(pattern_check(priv, 10, 0, 11), -1, "the private copy keeps the rest");
	munmap(priv, 2 * p);
	munmap(shared, 2 * p);
	close(fd);
}

Test(mmap, shared_writable_mapping_of_a_read_only_fd_fails_with_eacces)
{
	int fd = create_file("f", page()), r;

	close(fd);
	r = open(mp("f"), O_RDONLY);
	cr_assert_geq(r, 0);
	cr_assert_eq(mmap(NULL, page(), PROT_READ | PROT_WRITE, MAP_SHARED, r, 0), MAP_FAILED);
	cr_assert_eq(errno, EACCES);
	close(r);
}

static int child_checks_and_stores(void *arg)
{
	struct region *r = arg;

	if (pattern_check(r->map, r->off, 0, r->seed) >= 0)
		return 40;
	pattern_fill(r->map + r->off, r->len, r->off, r->seed + 1);
	return 0;
}

Test(mmap, mapping_of_an_unlinked_file_keeps_working)
{
	long p = page();
	int fd = create_file("f", 4 * p);
	unsigned char *m = map_shared(fd, 4 * p);
	struct region r = { "f", 2 * p, 2 * p, 12, m, NULL };

	cr_assert_eq(unlink(mp("f")), 0);
	pattern_fill(m, 2 * p, 0, 12);
	cr_assert_eq(file_has_pattern(fd, 0, 2 * p, 12), 0);
	close(fd);
	/* Only the mapping holds the file now; a child inherits it. */
	expect_child_ok(in_child(child_checks_and_stores, &r), "child using the mapping");
	cr_assert_eq(pattern_check(m + 2 * p, 2 * p, 2 * p, 13), -1, "the child's stores");
	cr_assert_eq(pattern_check(m, 2 * p, 0, 12), -1);
	cr_assert_eq(access(mp("f"), F_OK), -1);
	munmap(m, 4 * p);
}

/* ---------------------------------------------------------------- other ops after stores */

Test(mmap, copy_file_range_copies_data_stored_through_a_mapping)
{
	long p = page();
	int a = create_file("a", 8 * p), b = create_file("b", 0);
	unsigned char *m = map_shared(a, 8 * p);
	loff_t i = 0, o = 0;
	long long done = 0;

	pattern_fill(m, 3 * p + 50, 0, 14);
	while (done < 3 * p + 50) {
		ssize_t n = copy_file_range(a, &i, b, &o, 3 * p + 50 - done, 0);
		cr_assert_gt(n, 0, "copy_file_range: %s", n < 0 ? strerror(errno) : "returned 0");
		done += n;
	}
	cr_assert_eq(fd_stat(b).st_size, 3 * p + 50);
	cr_assert_eq(file_has_pattern(b, 0, 3 * p + 50, 14), 0, "the copy has the stored data");

	/* Within the file: the copy shows up in the mapping. */
	i = 0;
	o = 4 * p + 1;
	done = 0;
	while (done < 2 * p) {
		ssize_t n = copy_file_range(a, &i, a, &o, 2 * p - done, 0);
		cr_assert_gt(n, 0, "copy_file_range: %s", n < 0 ? strerror(errno) : "returned 0");
		done += n;
	}
	cr_assert_eq(memcmp(m + 4 * p + 1, m, 2 * p), 0, "the mapping shows the copied range");
	cr_assert_eq(pattern_check(m, 3 * p + 50, 0, 14), -1, "the source is unchanged");
	cr_assert(is_zero(m + 3 * p + 50, p - 49));
	munmap(m, 8 * p);
	close(a);
	close(b);
}

Test(mmap, punch_hole_after_stores_zeroes_the_range_in_the_mapping)
{
	long p = page();
	int fd = create_file("f", 6 * p);
	unsigned char *m = map_shared(fd, 6 * p);

	/* Stores that are still dirty in the page cache when the punch comes. */
	pattern_fill(m, 6 * p, 0, 15);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, p + 100,
			       3 * p - 50), 0, "punch: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 6 * p);
	cr_assert_eq(file_has_pattern(fd, 0, p + 100, 15), 0);
	cr_assert_eq(file_is_zero(fd, p + 100, 3 * p - 50), 0);
	cr_assert_eq(file_has_pattern(fd, 4 * p + 50, 2 * p - 50, 15), 0);
	/*
	 * st_blocks only after msync: a FUSE daemon learns of stores at writeback.
	 * And before any load from the hole through the mapping, because tmpfs
	 * allocates a page on a read fault.
	 */
	cr_assert_eq(msync(m, 6 * p, MS_SYNC), 0);
	cr_assert_eq(fd_stat(fd).st_blocks, 4 * p / 512, "two whole pages were freed, not %lld",
		     6 - (long long)fd_stat(fd).st_blocks / (p / 512));
	cr_assert_eq(pattern_check(m, p + 100, 0, 15), -1);
	cr_assert(is_zero(m + p + 100, 3 * p - 50), "the punched range reads zero when mapped");
	cr_assert_eq(pattern_check(m + 4 * p + 50, 2 * p - 50, 4 * p + 50, 15), -1);

	/* Storing into the hole again allocates again. */
	pattern_fill(m + 2 * p, 2 * p, 2 * p, 16);
	cr_assert_eq(msync(m, 6 * p, MS_SYNC), 0);
	cr_assert_eq(fd_stat(fd).st_blocks, 6 * p / 512);
	cr_assert_eq(file_has_pattern(fd, 2 * p, 2 * p, 16), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	cr_assert_eq(file_has_pattern(fd, 0, p + 100, 15), 0, "after dropping the cache");
	cr_assert_eq(file_is_zero(fd, p + 100, p - 100), 0);
	cr_assert_eq(file_has_pattern(fd, 2 * p, 2 * p, 16), 0);
	cr_assert_eq(file_is_zero(fd, 4 * p, 50), 0);
	cr_assert_eq(file_has_pattern(fd, 4 * p + 50, 2 * p - 50, 15), 0);
	munmap(m, 6 * p);
	close(fd);
}

Test(mmap, fallocate_keep_size_does_not_make_the_mapping_past_eof_accessible)
{
	long p = page();
	int fd = create_file("f", p);
	unsigned char *m = map_shared(fd, 4 * p);

	cr_assert_eq(fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 * p), 0);
	cr_assert(is_zero(m, p));
	expect_sigbus(in_child(child_touches, m + 2 * p), "load past EOF of preallocated pages");
	cr_assert_eq(fallocate(fd, 0, 0, 4 * p), 0);
	cr_assert_eq(fd_stat(fd).st_size, 4 * p);
	cr_assert(is_zero(m, 4 * p), "fallocate mode 0 extended the file; it maps as zeros");
	munmap(m, 4 * p);
	close(fd);
}
