/* SPDX-License-Identifier: MIT */
/*
 * test_concurrency.c - several processes, each with several threads, on one
 * mount: mixed mmap and pread/pwrite traffic checked byte for byte against a
 * reference, directory operations racing in one directory, O_APPEND writers,
 * and truncates racing with readers.  Workers meet at process-shared
 * barriers (never sleeps) and report failures through shared memory; only
 * the test process makes Criterion assertions.
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"
#include "rng.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(concurrency, .init = mnt_setup, .fini = mnt_teardown);

#define NPROC 4
#define NTHREAD 4
#define NWORKER (NPROC * NTHREAD)

/*
 * Wait for every child; if one dies abnormally, kill the others (they would
 * wait for it at a barrier forever) and fail.
 */
static void wait_children(pid_t *pids, int n)
{
	int left = n, bad = 0, bad_status = 0;

	while (left > 0) {
		int status;
		pid_t pid = wait(&status);

		cr_assert_gt(pid, 0, "wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			if (pids[i] != pid)
				continue;
			pids[i] = 0;
			left--;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				if (!bad)
					bad_status = status;
				bad = 1;
				for (int j = 0; j < n; j++)
					if (pids[j] > 0)
						kill(pids[j], SIGKILL);
			}
		}
	}
	cr_assert_not(bad, "a child %s %d", WIFEXITED(bad_status) ? "exited with" :
		      "was killed by signal", WIFEXITED(bad_status) ? WEXITSTATUS(bad_status) :
		      WTERMSIG(bad_status));
}

/* Fork n children running fn(i, arg) and wait for them all. */
static void run_children(int n, int (*fn)(int, void *), void *arg)
{
	pid_t pids[64];

	cr_assert_leq(n, 64);
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		cr_assert_geq(pids[i], 0, "fork: %s", strerror(errno));
		if (pids[i] == 0) {
			signal(SIGBUS, SIG_DFL);
			signal(SIGSEGV, SIG_DFL);
			_exit(fn(i, arg));
		}
	}
	wait_children(pids, n);
}

/* Start nthreads threads running fn(arg[i]) in the calling (child) process. */
static int run_threads(int nthreads, void *(*fn)(void *), void *args, size_t arg_size)
{
	pthread_t tids[16];

	for (int t = 0; t < nthreads; t++)
		if (pthread_create(&tids[t], NULL, fn, (char *)args + t * arg_size))
			return 50;
	for (int t = 0; t < nthreads; t++)
		pthread_join(tids[t], NULL);
	return 0;
}

/* ---------------------------------------------------------------- mixed data traffic */

#define ROUNDS 150
#define NSHARED 8

struct layout {
	long priv_pages, priv_bytes;    /* each worker's own region */
	long shared_pages, shared_bytes; /* each of the NSHARED rotating regions */
	const char *what;
};

struct traffic {
	struct layout l;
	long long priv, shared, size;
	pthread_barrier_t *barrier;
	struct report *report;
};

struct worker {
	struct traffic *t;
	int id;
	int fd;
	unsigned char *map;
	unsigned char *buf;
};

static unsigned round_seed(int round, int region)
{
	return (unsigned)round * 4096u + (unsigned)region + 1;
}

static long long priv_off(const struct traffic *t, int w)
{
	return w * t->priv;
}

static long long shared_off(const struct traffic *t, int s)
{
	return NWORKER * t->priv + s * t->shared;
}

/* Write [off, off+len) with the pattern by mmap stores, pwrite, or half of each. */
static void put(struct worker *w, long long off, long long len, unsigned seed, int how)
{
	long long half = len / 2;
	ssize_t n;

	pattern_fill(w->buf, len, off, seed);
	switch (how % 3) {
	case 0:
		memcpy(w->map + off, w->buf, len);
		break;
	case 1:
		n = pwrite(w->fd, w->buf, len, off);
		if (n != len)
			report_fail(w->t->report,
				    "worker %d: pwrite(%lld at %lld) returned %zd (%s)", w->id,
				    len, off, n, n < 0 ? strerror(errno) : "short");
		break;
	default:
		memcpy(w->map + off, w->buf, half);
		n = pwrite(w->fd, w->buf + half, len - half, off + half);
		if (n != len - half)
			report_fail(w->t->report,
				    "worker %d: pwrite(%lld at %lld) returned %zd (%s)", w->id,
				    len - half, off + half, n, n < 0 ? strerror(errno) : "short");
		break;
	}
}

/* Check [off, off+len) through the mapping (how even) or pread (how odd). */
static void check(struct worker *w, long long off, long long len, unsigned seed, int how,
		  int round, const char *what)
{
	const unsigned char *src = w->map + off;
	long long bad;

	if (how % 2) {
		ssize_t n = pread(w->fd, w->buf, len, off);

		if (n != len) {
			report_fail(w->t->report,
				    "round %d worker %d: pread(%lld at %lld) returned %zd", round,
				    w->id, len, off, n);
			return;
		}
		src = w->buf;
	}
	if (seed == 0) {
		for (bad = 0; bad < len && src[bad] == 0; bad++)
			;
		if (bad == len)
			bad = -1;
	} else {
		bad = pattern_check(src, len, off, seed);
	}
	if (bad >= 0)
		report_fail(w->t->report, "round %d worker %d: %s: byte at %lld wrong through %s "
			    "(0x%02x, seed %u)", round, w->id, what, off + bad,
			    how % 2 ? "pread" : "the mapping", src[bad], seed);
}

static void *traffic_worker(void *arg)
{
	struct worker *w = arg;
	struct traffic *t = w->t;

	for (int r = 0; r < ROUNDS; r++) {
		int how = r + w->id;

		/* Phase 1: write what this worker owns this round, check it back the other way. */
		put(w, priv_off(t, w->id), t->priv, round_seed(r, w->id), how);
		check(w, priv_off(t, w->id), t->priv, round_seed(r, w->id), how + 1, r, "own region");
		if (r % 7 == 3 && msync(w->map + (priv_off(t, w->id) & ~(page() - 1)),
					t->priv + page(), MS_SYNC))
			report_fail(t->report, "msync: %s", strerror(errno));
		for (int s = 0; s < NSHARED; s++) {
			if ((s + r) % NWORKER != w->id)
				continue;
			/* The previous owner's data must be there when ownership passes. */
			check(w, shared_off(t, s), t->shared,
			      r ? round_seed(r - 1, 1000 + s) : 0, how, r, "inherited region");
			put(w, shared_off(t, s), t->shared, round_seed(r, 1000 + s), how + s);
		}
		pthread_barrier_wait(t->barrier);

		/* Phase 2: nobody writes; everyone checks the shared regions and two neighbours. */
		for (int s = 0; s < NSHARED; s++)
			check(w, shared_off(t, s), t->shared, round_seed(r, 1000 + s), how + s, r,
			      "shared region");
		for (int k = 1; k < NWORKER; k += NWORKER / 2 - 1) {
			int other = (w->id + k) % NWORKER;

			check(w, priv_off(t, other), t->priv, round_seed(r, other), how + k, r,
			      "another worker's region");
		}
		pthread_barrier_wait(t->barrier);
	}
	return NULL;
}

static int traffic_process(int p, void *arg)
{
	struct traffic *t = arg;
	struct worker w[NTHREAD];
	int fd = open(mp("data"), O_RDWR);
	unsigned char *map;
	long long biggest = t->priv > t->shared ? t->priv : t->shared;

	if (fd < 0)
		return 40;
	map = mmap(NULL, t->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return 41;
	for (int i = 0; i < NTHREAD; i++) {
		w[i] = (struct worker){ t, p * NTHREAD + i, fd, map, malloc(biggest) };
		if (!w[i].buf)
			return 42;
	}
	if (run_threads(NTHREAD, traffic_worker, w, sizeof(w[0])))
		return 43;
	munmap(map, t->size);
	close(fd);
	return 0;
}

static void expect_final_state(struct traffic *t, int fd, const char *when)
{
	unsigned char *buf = malloc(t->size);
	long long bad;

	cr_assert_not_null(buf);
	cr_assert_eq(pread(fd, buf, t->size, 0), t->size);
	for (int w = 0; w < NWORKER; w++) {
		bad = pattern_check(buf + priv_off(t, w), t->priv, priv_off(t, w),
				    round_seed(ROUNDS - 1, w));
		cr_assert_eq(bad, -1, "%s: worker %d's region is wrong at byte %lld", when, w,
			     priv_off(t, w) + bad);
	}
	for (int s = 0; s < NSHARED; s++) {
		bad = pattern_check(buf + shared_off(t, s), t->shared, shared_off(t, s),
				    round_seed(ROUNDS - 1, 1000 + s));
		cr_assert_eq(bad, -1, "%s: shared region %d is wrong at byte %lld", when, s,
			     shared_off(t, s) + bad);
	}
	free(buf);
}

ParameterizedTestParameters(concurrency, mixed_mmap_and_pread_pwrite_traffic_matches_the_reference)
{
	static struct layout layouts[] = {
		{ 4, 0, 2, 0, "page-aligned regions" },
		{ 0, 3000, 1, 904, "regions that share pages" },
		{ 1, 7, 0, 1111, "odd-sized regions" },
	};
	return cr_make_param_array(struct layout, layouts, sizeof(layouts) / sizeof(layouts[0]));
}

ParameterizedTest(struct layout *l, concurrency,
		  mixed_mmap_and_pread_pwrite_traffic_matches_the_reference)
{
	struct traffic *t = shared_zalloc(sizeof(*t));
	int fd;

	t->l = *l;
	t->priv = l->priv_pages * page() + l->priv_bytes;
	t->shared = l->shared_pages * page() + l->shared_bytes;
	t->size = NWORKER * t->priv + NSHARED * t->shared;
	t->barrier = shared_barrier(NWORKER);
	t->report = shared_zalloc(sizeof(*t->report));

	fd = open(mp("data"), O_RDWR | O_CREAT | O_EXCL, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, t->size), 0);
	run_children(NPROC, traffic_process, t);
	expect_no_failures(t->report);
	expect_final_state(t, fd, l->what);
	/* Once more from the filesystem's copy, with the page cache dropped. */
	cr_assert_eq(fsync(fd), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_final_state(t, fd, "after dropping the page cache");
	close(fd);
}

/* ---------------------------------------------------------------- directory races */

#define NAMES 150
#define SHARED_NAMES 40
#define DIR_ITERATIONS 3

struct dirrace {
	pthread_barrier_t *barrier;
	struct report *report;
	int wins[DIR_ITERATIONS][SHARED_NAMES];
};

static int write_name_file(const char *path, const char *content, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, content, strlen(content));
	close(fd);
	return n == (ssize_t)strlen(content) ? 0 : -EIO;
}

static int dirrace_process(int p, void *arg)
{
	struct dirrace *d = arg;
	char a[128], b[128], content[64];

	for (int it = 0; it < DIR_ITERATIONS; it++) {
		pthread_barrier_wait(d->barrier);
		for (int j = 0; j < NAMES; j++) {
			int err;

			snprintf(a, sizeof(a), "d%d/p%d_%d", it, p, j);
			snprintf(content, sizeof(content), "p%d_%d", p, j);
			err = write_name_file(mp(a), content, O_EXCL);
			if (err)
				report_fail(d->report, "create %s: %s", a, strerror(-err));
			snprintf(b, sizeof(b), "%s/d%d/r%d_%d", mnt.dir, it, p, j);
			if (rename(mp(a), b))
				report_fail(d->report, "rename %s: %s", a, strerror(errno));
			if (j % 3 == 0 && unlink(b))
				report_fail(d->report, "unlink %s: %s", b, strerror(errno));

			/* Everyone races for the shared names; exactly one create wins. */
			snprintf(a, sizeof(a), "d%d/s%d", it, j % SHARED_NAMES);
			snprintf(content, sizeof(content), "%d", p);
			err = write_name_file(mp(a), content, O_EXCL);
			if (err == 0)
				__atomic_fetch_add(&d->wins[it][j % SHARED_NAMES], 1,
						   __ATOMIC_SEQ_CST);
			else if (err != -EEXIST)
				report_fail(d->report, "create %s: %s", a, strerror(-err));

			/* And replace one common name by rename, atomically. */
			snprintf(a, sizeof(a), "d%d/t%d", it, p);
			snprintf(content, sizeof(content), "%d:%d", p, j);
			err = write_name_file(mp(a), content, O_TRUNC);
			if (err)
				report_fail(d->report, "create %s: %s", a, strerror(-err));
			snprintf(b, sizeof(b), "%s/d%d/common", mnt.dir, it);
			if (rename(mp(a), b))
				report_fail(d->report, "rename %s over common: %s", a,
					    strerror(errno));
		}
	}
	return 0;
}

static void read_small(const char *rel, char *buf, size_t size)
{
	int fd = open(mp(rel), O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0, "open %s: %s", rel, strerror(errno));
	n = read(fd, buf, size - 1);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	close(fd);
}

Test(concurrency, racing_create_rename_unlink_in_one_directory_leave_exactly_the_expected_names)
{
	struct dirrace *d = shared_zalloc(sizeof(*d));
	char name[128], rel[300], content[64];

	d->barrier = shared_barrier(NPROC);
	d->report = shared_zalloc(sizeof(*d->report));
	for (int it = 0; it < DIR_ITERATIONS; it++) {
		snprintf(name, sizeof(name), "d%d", it);
		cr_assert_eq(mkdir(mp(name), 0755), 0);
	}
	run_children(NPROC, dirrace_process, d);
	expect_no_failures(d->report);

	for (int it = 0; it < DIR_ITERATIONS; it++) {
		static char seen[NPROC][NAMES], seen_shared[SHARED_NAMES];
		int entries = 0, common = 0;
		struct dirent *e;
		struct stat st;
		DIR *dir;

		memset(seen, 0, sizeof(seen));
		memset(seen_shared, 0, sizeof(seen_shared));
		snprintf(name, sizeof(name), "d%d", it);
		dir = opendir(mp(name));
		cr_assert_not_null(dir);
		while ((e = readdir(dir))) {
			int p, j;

			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			entries++;
			if (sscanf(e->d_name, "r%d_%d", &p, &j) == 2 && p >= 0 && p < NPROC &&
			    j >= 0 && j < NAMES && j % 3 != 0) {
				cr_assert_not(seen[p][j]++, "%s listed twice", e->d_name);
				snprintf(rel, sizeof(rel), "d%d/%s", it, e->d_name);
				read_small(rel, content, sizeof(content));
				snprintf(rel, sizeof(rel), "p%d_%d", p, j);
				cr_assert_str_eq(content, rel, "%s has the wrong content", e->d_name);
			} else if (sscanf(e->d_name, "s%d", &j) == 1 && j >= 0 && j < SHARED_NAMES) {
				cr_assert_not(seen_shared[j]++, "%s listed twice", e->d_name);
				cr_assert_eq(d->wins[it][j], 1, "%d creates of %s won", d->wins[it][j],
					     e->d_name);
			} else if (!strcmp(e->d_name, "common")) {
				cr_assert_not(common++, "common listed twice");
				snprintf(rel, sizeof(rel), "d%d/common", it);
				read_small(rel, content, sizeof(content));
				cr_assert(sscanf(content, "%d:%d", &p, &j) == 2 && p >= 0 &&
					  p < NPROC && j == NAMES - 1,
					  "common holds \"%s\", not some process's last version", content);
			} else {
				cr_assert_fail("unexpected name %s in %s", e->d_name, name);
			}
		}
		closedir(dir);
		for (int p = 0; p < NPROC; p++)
			for (int j = 0; j < NAMES; j++)
				cr_assert_eq(seen[p][j], j % 3 != 0, "r%d_%d %s", p, j,
					     j % 3 ? "is missing" : "was unlinked but is listed");
		for (int j = 0; j < SHARED_NAMES; j++)
			cr_assert(seen_shared[j], "s%d is missing", j);
		cr_assert_eq(common, 1);
		cr_assert_eq(entries, NPROC * (NAMES - NAMES / 3) + SHARED_NAMES + 1);
		cr_assert_eq(stat(mp(name), &st), 0);
		cr_assert_eq(st.st_nlink, 2);
		cr_assert_eq(st.st_size, 40 + 20 * entries, "directory size %lld for %d entries",
			     (long long)st.st_size, entries);
	}
}

/* ---------------------------------------------------------------- O_APPEND */

#define APPEND_THREADS 2
#define RECORDS 300
#define APPEND_ITERATIONS 3
#define RECORD_SIZE 100 /* does not divide the page size: records straddle pages */

struct record {
	uint32_t writer, seq;
	unsigned char body[RECORD_SIZE - 8];
};

struct appender {
	pthread_barrier_t *barrier;
	struct report *report;
	int fd;
	int writer;
	int iteration;
};

static void *append_thread(void *arg)
{
	struct appender *a = arg;
	struct record rec;

	pthread_barrier_wait(a->barrier);
	for (uint32_t seq = 0; seq < RECORDS; seq++) {
		ssize_t n;

		rec.writer = a->writer;
		rec.seq = seq;
		pattern_fill(rec.body, sizeof(rec.body), 0, a->writer * 100000u + seq);
		n = write(a->fd, &rec, sizeof(rec));
		if (n != (ssize_t)sizeof(rec)) {
			report_fail(a->report, "writer %d: append returned %zd (%s)", a->writer, n,
				    n < 0 ? strerror(errno) : "short");
			break;
		}
	}
	return NULL;
}

static int append_process(int p, void *arg)
{
	struct appender *proto = arg, a[APPEND_THREADS];
	char rel[32];
	int fd;

	snprintf(rel, sizeof(rel), "log%d", proto->iteration);
	fd = open(mp(rel), O_WRONLY | O_APPEND);
	if (fd < 0)
		return 60;
	for (int t = 0; t < APPEND_THREADS; t++) {
		a[t] = *proto;
		a[t].fd = fd; /* the threads of a process share one fd */
		a[t].writer = p * APPEND_THREADS + t;
	}
	if (run_threads(APPEND_THREADS, append_thread, a, sizeof(a[0])))
		return 61;
	close(fd);
	return 0;
}

Test(concurrency, concurrent_o_append_writers_leave_every_record_exactly_once)
{
	const int writers = NPROC * APPEND_THREADS;
	struct appender *proto = shared_zalloc(sizeof(*proto));
	long long size = (long long)writers * RECORDS * RECORD_SIZE;
	struct record *recs = malloc(size);

	cr_assert_not_null(recs);
	proto->barrier = shared_barrier(writers);
	proto->report = shared_zalloc(sizeof(*proto->report));
	for (int it = 0; it < APPEND_ITERATIONS; it++) {
		int next[NPROC * APPEND_THREADS] = { 0 };
		char rel[32];
		struct stat st;
		int fd;

		snprintf(rel, sizeof(rel), "log%d", it);
		fd = open(mp(rel), O_RDWR | O_CREAT | O_EXCL, 0644);
		cr_assert_geq(fd, 0);
		proto->iteration = it;
		run_children(NPROC, append_process, proto);
		expect_no_failures(proto->report);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_assert_eq(st.st_size, size, "iteration %d: size %lld, expected %lld", it,
			     (long long)st.st_size, size);
		cr_assert_eq(pread(fd, recs, size, 0), size);
		for (int i = 0; i < writers * RECORDS; i++) {
			struct record *r = &recs[i];

			cr_assert_lt(r->writer, (uint32_t)writers, "record %d is damaged", i);
			/* Each writer's records are in order, so every one appears exactly once. */
			cr_assert_eq(r->seq, (uint32_t)next[r->writer], "record %d: writer %u seq %u "
				     "after seq %d", i, r->writer, r->seq, next[r->writer] - 1);
			next[r->writer]++;
			cr_assert_eq(pattern_check(r->body, sizeof(r->body), 0,
						   r->writer * 100000u + r->seq), -1,
				     "record %d (writer %u seq %u) is torn", i, r->writer, r->seq);
		}
		for (int w = 0; w < writers; w++)
			cr_assert_eq(next[w], RECORDS);
		close(fd);
	}
	free(recs);
}

/* ---------------------------------------------------------------- truncate vs readers */

#define TRUNC_PAGES 64
#define TRUNCATES 800
#define READS 3000
#define TRUNC_SEED 77

struct truncrace {
	pthread_barrier_t *barrier;
	struct report *report;
	long long size;
};

static __thread sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* memcpy from a mapping; -1 if it hit SIGBUS (the file had shrunk). */
static int copy_from_map(void *dst, const void *src, size_t len)
{
	if (sigsetjmp(bus_jmp, 1))
		return -1;
	memcpy(dst, src, len);
	return 0;
}

/* Every byte must be the pattern or zero; the file never holds anything else. */
static void check_old_or_zero(struct truncrace *t, const unsigned char *buf, long long len,
			      long long off, const char *how)
{
	unsigned char want[4096];

	for (long long i = 0; i < len; i += sizeof(want)) {
		long long n = len - i < (long long)sizeof(want) ? len - i : (long long)sizeof(want);

		pattern_fill(want, n, off + i, TRUNC_SEED);
		for (long long k = 0; k < n; k++)
			if (buf[i + k] != want[k] && buf[i + k] != 0) {
				report_fail(t->report, "%s: byte at %lld is 0x%02x, neither the "
					    "data (0x%02x) nor zero", how, off + i + k, buf[i + k],
					    want[k]);
				return;
			}
	}
}

struct reader {
	struct truncrace *t;
	int fd;
	uint64_t seed;
	int use_map;
};

static void *reader_thread(void *arg)
{
	struct reader *r = arg;
	struct truncrace *t = r->t;
	unsigned char *buf = malloc(16 * page());
	unsigned char *map = NULL;

	if (!buf) {
		report_fail(t->report, "malloc");
		return NULL;
	}
	if (r->use_map) {
		map = mmap(NULL, t->size, PROT_READ, MAP_SHARED, r->fd, 0);
		if (map == MAP_FAILED) {
			report_fail(t->report, "mmap: %s", strerror(errno));
			free(buf);
			return NULL;
		}
	}
	pthread_barrier_wait(t->barrier);
	for (int i = 0; i < READS; i++) {
		long long off = rng_next(&r->seed) % t->size;
		long long len = 1 + rng_next(&r->seed) % (16 * page());

		if (len > t->size - off)
			len = t->size - off;
		if (map) {
			/* Past EOF a load raises SIGBUS: that copy is simply dropped. */
			if (copy_from_map(buf, map + off, len) == 0)
				check_old_or_zero(t, buf, len, off, "load through the mapping");
		} else {
			ssize_t n = pread(r->fd, buf, len, off);

			if (n < 0)
				report_fail(t->report, "pread: %s", strerror(errno));
			else
				check_old_or_zero(t, buf, n, off, "pread");
		}
	}
	if (map)
		munmap(map, t->size);
	free(buf);
	return NULL;
}

static int truncate_reader_process(int p, void *arg)
{
	struct truncrace *t = arg;
	struct reader r[2];
	struct sigaction sa = { .sa_handler = on_sigbus };
	int fd = open(mp("f"), O_RDONLY);

	if (fd < 0)
		return 70;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	for (int i = 0; i < 2; i++)
		r[i] = (struct reader){ t, fd, 1234u + p * 2 + i, i };
	if (run_threads(2, reader_thread, r, sizeof(r[0])))
		return 71;
	close(fd);
	return 0;
}

static int truncater_process(int p, void *arg)
{
	struct truncrace *t = arg;
	uint64_t seed = 99u + p;
	unsigned char *data = malloc(t->size);
	int fd = open(mp("f"), O_RDWR);

	if (fd < 0 || !data)
		return 80;
	pattern_fill(data, t->size, 0, TRUNC_SEED);
	pthread_barrier_wait(t->barrier);
	for (int i = 0; i < TRUNCATES; i++) {
		long long cut = rng_next(&seed) % t->size;
		ssize_t n;

		if (i % 2)
			cut &= ~(page() - 1);
		if (ftruncate(fd, cut) || ftruncate(fd, t->size))
			report_fail(t->report, "ftruncate: %s", strerror(errno));
		/* Put the data back, so that readers have something to see. */
		n = pwrite(fd, data + cut, t->size - cut, cut);
		if (n != t->size - cut)
			report_fail(t->report, "pwrite: %zd (%s)", n,
				    n < 0 ? strerror(errno) : "short");
	}
	free(data);
	close(fd);
	return 0;
}

static int truncrace_process(int p, void *arg)
{
	return p < 2 ? truncater_process(p, arg) : truncate_reader_process(p, arg);
}

Test(concurrency, truncates_racing_with_readers_show_only_old_data_or_zeros)
{
	struct truncrace *t = shared_zalloc(sizeof(*t));
	int fd;
	struct stat st;

	t->size = TRUNC_PAGES * page();
	/* 2 truncating processes, 2 reading processes with 2 threads each. */
	t->barrier = shared_barrier(2 + 2 * 2);
	t->report = shared_zalloc(sizeof(*t->report));
	fd = open(mp("f"), O_RDWR | O_CREAT | O_EXCL, 0644);
	cr_assert_geq(fd, 0);
	{
		unsigned char *data = malloc(t->size);

		cr_assert_not_null(data);
		pattern_fill(data, t->size, 0, TRUNC_SEED);
		cr_assert_eq(pwrite(fd, data, t->size, 0), t->size);
		free(data);
	}
	run_children(4, truncrace_process, t);
	expect_no_failures(t->report);

	/* Each truncater ended by restoring the data it cut: the file is whole again. */
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_size, t->size);
	{
		unsigned char *buf = malloc(t->size);
		long long bad;

		cr_assert_not_null(buf);
		cr_assert_eq(pread(fd, buf, t->size, 0), t->size);
		check_old_or_zero(t, buf, t->size, 0, "final read");
		expect_no_failures(t->report);
		/* Restore once more without racing: now it must be exactly the data. */
		pattern_fill(buf, t->size, 0, TRUNC_SEED);
		cr_assert_eq(pwrite(fd, buf, t->size, 0), t->size);
		cr_assert_eq(fsync(fd), 0);
		cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
		memset(buf, 0, t->size);
		cr_assert_eq(pread(fd, buf, t->size, 0), t->size);
		bad = pattern_check(buf, t->size, 0, TRUNC_SEED);
		cr_assert_eq(bad, -1, "byte %lld wrong after the race", bad);
		free(buf);
	}
	close(fd);
}
