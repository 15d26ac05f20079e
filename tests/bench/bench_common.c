/* SPDX-License-Identifier: MIT */
/* Helpers the bench programs share; see bench_common.h. */
#define _GNU_SOURCE
#include "bench_common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

int failures;

void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "%s: ", bench_prog);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int xopen(const char *path, int flags)
{
	int fd = open(path, flags, 0644);

	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	return fd;
}

void xclose(int fd, const char *path)
{
	if (close(fd) != 0)
		die("close %s: %s", path, strerror(errno));
}

static uint64_t tag_of(uint64_t blockno)
{
	return blockno * 0x9e3779b97f4a7c15ull + 1;
}

void stamp(char *b, uint64_t blockno)
{
	uint64_t tag = tag_of(blockno);

	memcpy(b, &tag, sizeof(tag));
	memcpy(b + BLOCK - sizeof(tag), &tag, sizeof(tag));
}

void check_stamp(const char *b, uint64_t blockno)
{
	uint64_t tag = tag_of(blockno), a, z;

	memcpy(&a, b, sizeof(a));
	memcpy(&z, b + BLOCK - sizeof(z), sizeof(z));
	if ((a != tag || z != tag) && failures++ < 5)
		fprintf(stderr, "%s: block %llu reads back wrong\n", bench_prog,
			(unsigned long long)blockno);
}

void write_stamped(int fd, const char *path, uint64_t size, char *buf)
{
	for (uint64_t off = 0; off < size; off += BLOCK) {
		stamp(buf, off / BLOCK);
		if (pwrite(fd, buf, BLOCK, (off_t)off) != (ssize_t)BLOCK)
			die("write %s: %s", path, strerror(errno));
	}
	if (fsync(fd) != 0)
		die("fsync %s: %s", path, strerror(errno));
}

double resident(int fd, uint64_t size)
{
	size_t npages = (size_t)(size / PAGE), n = 0;
	unsigned char *vec;
	void *map;

	map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap for mincore: %s", strerror(errno));
	vec = malloc(npages);
	if (!vec || mincore(map, size, vec) != 0)
		die("mincore: %s", strerror(errno));
	for (size_t i = 0; i < npages; i++)
		n += vec[i] & 1;
	free(vec);
	munmap(map, size);
	return (double)n / (double)npages;
}

void drop_page_cache(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (fd < 0 || write(fd, "1", 1) != 1)
		fprintf(stderr, "%s: drop_caches: %s\n", bench_prog, strerror(errno));
	if (fd >= 0)
		close(fd);
}

bool drop_file_cache(int fd, uint64_t size)
{
	fsync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (resident(fd, size) > 0.001) {
		drop_page_cache();
		if (resident(fd, size) > 0.001)
			return true;
	}
	return false;
}

long read_ahead_kb(const char *dir)
{
	char path[128];
	struct stat st;
	long kb = -1;
	FILE *f;

	if (stat(dir, &st) != 0)
		die("%s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb",
		 major(st.st_dev), minor(st.st_dev));
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &kb) != 1)
		kb = -1;
	fclose(f);
	return kb;
}

void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	return p;
}

struct thread_part {
	void (*fn)(void *arg, unsigned i, unsigned n);
	void *arg;
	unsigned i, n;
};

static void *thread_main(void *arg)
{
	struct thread_part *p = arg;

	p->fn(p->arg, p->i, p->n);
	return NULL;
}

double time_threads(unsigned n, void (*fn)(void *arg, unsigned i, unsigned n), void *arg)
{
	pthread_t *t = malloc(n * sizeof(*t));
	struct thread_part *part = malloc(n * sizeof(*part));
	double t0;

	if (!t || !part)
		die("out of memory");
	for (unsigned i = 0; i < n; i++)
		part[i] = (struct thread_part){ fn, arg, i, n };
	t0 = now_s();
	for (unsigned i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, thread_main, &part[i]))
			die("pthread_create failed");
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	t0 = now_s() - t0;
	free(t);
	free(part);
	return t0;
}

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double median(const double *v, int n)
{
	double *s = malloc((size_t)n * sizeof(*s)), m;

	if (!s)
		die("out of memory");
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	free(s);
	return m;
}

uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end || v < BLOCK || v % BLOCK)
		die("bad size '%s' (a multiple of 1M)", s);
	return v;
}

long parse_count(const char *s, const char *opt, long min, long max)
{
	long v = strtol(s, NULL, 10);

	if (v < min || v > max)
		die("bad %s '%s' (%ld to %ld)", opt, s, min, max);
	return v;
}

void common_option(int opt, const char *arg, int *reps, bool *verbose)
{
	switch (opt) {
	case 'r':
		*reps = (int)parse_count(arg, "-r", 1, MAX_REPS);
		break;
	case 'v':
		*verbose = true;
		break;
	case 'h':
		usage(stdout);
		exit(0);
	default:
		usage(stderr);
		exit(1);
	}
}

void expect_operands(int argc, int n)
{
	if (argc - optind != n) {
		usage(stderr);
		exit(1);
	}
}

bool dir_operand(const char *arg, struct statfs *sfs)
{
	if (strcmp(arg, "-") == 0)
		return false;
	if (statfs(arg, sfs) != 0)
		die("%s: %s", arg, strerror(errno));
	return true;
}

void table_head(int name_w, int unit_w)
{
	printf("%-*s %-*s %10s %10s %7s\n", name_w, "row", unit_w, "unit", "value", "baseline",
	       "ratio");
}

void table_row(int name_w, int unit_w, const char *row, const char *unit, double value,
	       double base, bool higher)
{
	if (base > 0)
		printf("%-*s %-*s %10.2f %10.2f %7.3f\n", name_w, row, unit_w, unit, value, base,
		       higher ? value / base : base / value);
	else
		printf("%-*s %-*s %10.2f %10s %7s\n", name_w, row, unit_w, unit, value, "-", "-");
}

int exit_status(const char *what)
{
	if (!failures)
		return 0;
	fprintf(stderr, "%s: %d %s\n", bench_prog, failures, what);
	return 1;
}
