/* SPDX-License-Identifier: MIT */
/*
 * bench_device.c - the device-memory rows of `make bench` (issue 3), each
 * measured in the same run as its baseline.
 *
 * Usage: bench_device [-v] [-r REPS] [-s SIZE] [-S BW_SIZE] [-n FAULTS]
 *                     DEV1_DIR DEV2_DIR BW1_DIR BW2_DIR FUSE_MIN_DIR
 *   DEV1_DIR, DEV2_DIR  hmmfs mounts with one private device of at least
 *                       SIZE bytes, unthrottled, 1 and 2 DMA engines;
 *   BW1_DIR, BW2_DIR    the same with dma_bw set, 1 and 2 engines;
 *   FUSE_MIN_DIR        a fuse_min mount (the fault-latency baseline).
 *   A directory given as "-" skips the rows that need it.  -v prints every
 *   repetition on stderr.
 *
 * Rows:
 *  1. Migration bandwidth of a SIZE file (default 1 GiB), host -> device
 *     and device -> host, through hmm_file_migrate(), 1 and 2 engines,
 *     against memcpy of SIZE bytes on one core into an already-touched
 *     buffer (the target's baseline), also shown into a fresh buffer (page
 *     faults included: the daemon's destination pool maps and populates
 *     fresh memory for every migration) and on two threads.  The file's
 *     page cache is dropped before each timed migration, so the time is
 *     that of moving the pages, not of dropping a cached copy.
 *  2. Sequential mmap read of the SIZE file cold from the device against
 *     the same read cold from host RAM, on the same mount (hence the same
 *     read_ahead_kb).
 *  3. Random 4 KiB mmap faults, one load on each of FAULTS distinct random
 *     pages of a SIZE file on the device (MADV_RANDOM, so each fault is one
 *     4 KiB READ and one page brought back), against the same loads on the
 *     same file cold on fuse_min.  Median and p99 of each fault.
 *  4. Migration bandwidth of a BW_SIZE file (default 256 MiB) with dma_bw
 *     set, against engines x dma_bw (dma_bw is per engine).
 *
 * Repetitions interleave the compared cases, each repetition starting with
 * a different one; each cell is the median over repetitions.  Nothing is
 * asserted: the machine is shared and noisy, so the program reports.  The
 * exit status is 1 only when the benchmark itself could not run or data
 * read back wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <hmm.h>

#include "bench_common.h"

/* The mounts, by role. */
enum { DEV1, DEV2, BW1, BW2, FMIN, NMNT };

struct mnt {
	const char *label;
	const char *dir;        /* NULL: skipped */
	char data[512];         /* this mount's data file */
	uint64_t size;          /* its size */
	long ra_kb;
	struct hmm_device_info info; /* device 0 at start (hmmfs mounts) */
	bool has_file;
};

static struct mnt mnts[NMNT] = {
	{ .label = "hmmfs dma_engines=1" }, { .label = "hmmfs dma_engines=2" },
	{ .label = "hmmfs dma_bw, 1 engine" }, { .label = "hmmfs dma_bw, 2 engines" },
	{ .label = "fuse_min" },
};

static uint64_t file_size = (uint64_t)1 << 30;
static uint64_t bw_size = (uint64_t)256 << 20;
static long nfaults = 4000;
static int reps = 3;
static bool verbose;
static char *buf;               /* one block */
static bool not_cold;           /* some cold case found pages still cached */

const char *const bench_prog = "bench_device";

static void write_file(struct mnt *m, uint64_t size)
{
	int fd;

	unlink(m->data);
	fd = xopen(m->data, O_CREAT | O_EXCL | O_WRONLY);
	memset(buf, 0x5a, BLOCK);
	write_stamped(fd, m->data, size, buf);
	close(fd);
	m->size = size;
	m->has_file = true;
}

/* Drop the file's page cache and check with mincore.  Not timed. */
static void make_cold(int fd, uint64_t size)
{
	if (drop_file_cache(fd, size))
		not_cold = true;
}

static void dev_info(int fd, struct hmm_device_info *info)
{
	int err = hmm_device_info(fd, 0, info);

	if (err)
		die("HMM_IOC_DEVICE_INFO: %s", strerror(-err));
}

/* Untimed: put the whole file at dest. */
static void place(struct mnt *m, int dest)
{
	int fd = xopen(m->data, O_RDONLY);
	int err = hmm_file_migrate(fd, 0, 0, dest, NULL);

	if (err)
		die("migrate %s to %d: %s", m->data, dest, strerror(-err));
	close(fd);
}

/* A timed whole-file migration; returns MB/s, adds DMA busy time to *busy_ns. */
static double migrate_mbps(struct mnt *m, int dest, double *busy_ns)
{
	struct hmm_device_info a, b;
	struct hmm_migrate res;
	int fd, err;
	double t;

	/* The whole file at the other end first (a no-op when it is there). */
	place(m, dest == HMM_LOC_HOST ? 0 : HMM_LOC_HOST);
	fd = xopen(m->data, O_RDONLY);
	make_cold(fd, m->size);
	dev_info(fd, &a);
	t = now_s();
	err = hmm_file_migrate(fd, 0, 0, dest, &res);
	t = now_s() - t;
	if (err)
		die("migrate %s to %d: %s", m->data, dest, strerror(-err));
	dev_info(fd, &b);
	close(fd);
	if (res.moved != m->size / a.page_size && failures++ < 5)
		fprintf(stderr, "bench_device: %s: moved %llu pages of %llu\n", m->data,
			(unsigned long long)res.moved,
			(unsigned long long)(m->size / a.page_size));
	if (busy_ns)
		*busy_ns += (double)(b.dma_busy_ns - a.dma_busy_ns);
	return (double)m->size / t / 1e6;
}

/* ------------------------------------------------------------- baselines */

static char *src_buf, *dst_buf; /* file_size each, touched */

static double memcpy_touched(void)
{
	double t = now_s();

	memcpy(dst_buf, src_buf, file_size);
	t = now_s() - t;
	return (double)file_size / t / 1e6;
}

/* The same bytes copied 4 KiB at a time, as the engines copy pages. */
static double memcpy_pages(void)
{
	double t = now_s();

	for (uint64_t off = 0; off < file_size; off += PAGE)
		memcpy(dst_buf + off, src_buf + off, PAGE);
	t = now_s() - t;
	return (double)file_size / t / 1e6;
}

static double memcpy_fresh(void)
{
	double t = now_s();
	char *d = mmap(NULL, file_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (d == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	memcpy(d, src_buf, file_size);
	t = now_s() - t;
	munmap(d, file_size);
	return (double)file_size / t / 1e6;
}

struct half {
	char *dst;
	const char *src;
	size_t len;
};

static void *copy_half(void *arg)
{
	struct half *h = arg;

	memcpy(h->dst, h->src, h->len);
	return NULL;
}

static double memcpy_2threads(void)
{
	struct half h[2] = {
		{ dst_buf, src_buf, file_size / 2 },
		{ dst_buf + file_size / 2, src_buf + file_size / 2, file_size / 2 },
	};
	pthread_t th;
	double t = now_s();

	if (pthread_create(&th, NULL, copy_half, &h[1]))
		die("pthread_create failed");
	copy_half(&h[0]);
	pthread_join(th, NULL);
	t = now_s() - t;
	return (double)file_size / t / 1e6;
}

/* ------------------------------------------------------------- results */

enum {
	R_MEMCPY, R_MEMCPY_PAGES, R_MEMCPY_FRESH, R_MEMCPY_2T,
	R_M1_TO, R_M1_FROM, R_M2_TO, R_M2_FROM,
	R_MMAP_DEV, R_MMAP_HOST,
	R_FAULT_DEV_MED, R_FAULT_DEV_P99, R_FAULT_FMIN_MED, R_FAULT_FMIN_P99,
	R_BW1_TO, R_BW1_FROM, R_BW2_TO, R_BW2_FROM,
	NRES
};

static double res[NRES][MAX_REPS];
static bool have[NRES];
static double busy_ns[NMNT][2];  /* DMA busy time summed over reps, by direction */
static uint64_t fault_backs[MAX_REPS]; /* cpu_faults counted per fault rep */

static void put(int r, int rep, double v)
{
	res[r][rep] = v;
	have[r] = true;
	if (verbose)
		fprintf(stderr, "bench_device: result %d rep %d: %.2f\n", r, rep + 1, v);
}

static double med(int r)
{
	return have[r] ? median(res[r], reps) : -1;
}

/* ------------------------------------------------------------- rows */

/* Row 1: one repetition, the cases in an order that rotates with rep. */
static void run_migration_rep(int rep)
{
	for (int i = 0; i < 4; i++) {
		switch ((i + rep) % 4) {
		case 0:
			put(R_MEMCPY, rep, memcpy_touched());
			put(R_MEMCPY_PAGES, rep, memcpy_pages());
			break;
		case 1:
			put(R_MEMCPY_FRESH, rep, memcpy_fresh());
			put(R_MEMCPY_2T, rep, memcpy_2threads());
			break;
		case 2:
			if (mnts[DEV1].has_file) {
				put(R_M1_TO, rep, migrate_mbps(&mnts[DEV1], 0, &busy_ns[DEV1][0]));
				put(R_M1_FROM, rep, migrate_mbps(&mnts[DEV1], HMM_LOC_HOST,
								 &busy_ns[DEV1][1]));
			}
			break;
		case 3:
			if (mnts[DEV2].has_file) {
				put(R_M2_TO, rep, migrate_mbps(&mnts[DEV2], 0, &busy_ns[DEV2][0]));
				put(R_M2_FROM, rep, migrate_mbps(&mnts[DEV2], HMM_LOC_HOST,
								 &busy_ns[DEV2][1]));
			}
			break;
		}
	}
}

static double mmap_read(struct mnt *m)
{
	int fd = xopen(m->data, O_RDONLY);
	double t;
	char *map;

	make_cold(fd, m->size);
	t = now_s();
	map = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap %s: %s", m->data, strerror(errno));
	for (uint64_t off = 0; off < m->size; off += BLOCK) {
		memcpy(buf, map + off, BLOCK);
		check_stamp(buf, off / BLOCK);
	}
	munmap(map, m->size);
	t = now_s() - t;
	close(fd);
	return (double)m->size / t / 1e6;
}

/* Row 2 on DEV1. */
static void run_mmap_rep(int rep)
{
	struct mnt *m = &mnts[DEV1];

	for (int i = 0; i < 2; i++) {
		if ((i + rep) % 2 == 0) {
			place(m, 0);
			put(R_MMAP_DEV, rep, mmap_read(m));
		} else {
			place(m, HMM_LOC_HOST);
			put(R_MMAP_HOST, rep, mmap_read(m));
		}
	}
}

static uint64_t *fault_off;     /* nfaults distinct page offsets */
static double *lat;             /* nfaults latencies, seconds */

/* One load on each page of fault_off; median and p99 in microseconds. */
static void fault_latency(struct mnt *m, double *median_us, double *p99_us)
{
	int fd = xopen(m->data, O_RDONLY);
	volatile const char *map;
	uint64_t sink = 0;

	make_cold(fd, m->size);
	map = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap %s: %s", m->data, strerror(errno));
	if (madvise((void *)map, m->size, MADV_RANDOM) != 0)
		die("madvise: %s", strerror(errno));
	for (long i = 0; i < nfaults; i++) {
		double t = now_s();

		sink += (unsigned char)map[fault_off[i]];
		lat[i] = now_s() - t;
	}
	munmap((void *)map, m->size);
	close(fd);
	(void)sink;
	qsort(lat, (size_t)nfaults, sizeof(*lat), cmp_double);
	*median_us = lat[nfaults / 2] * 1e6;
	*p99_us = lat[(size_t)((double)nfaults * 0.99)] * 1e6;
}

/* Row 3: DEV1 (file on the device) against FMIN. */
static void run_fault_rep(int rep)
{
	for (int i = 0; i < 2; i++) {
		double md, p99;

		if ((i + rep) % 2 == 0 && mnts[DEV1].has_file) {
			struct hmm_device_info a, b;
			int fd;

			place(&mnts[DEV1], 0);
			fd = xopen(mnts[DEV1].data, O_RDONLY);
			dev_info(fd, &a);
			fault_latency(&mnts[DEV1], &md, &p99);
			dev_info(fd, &b);
			close(fd);
			fault_backs[rep] = b.cpu_faults - a.cpu_faults;
			put(R_FAULT_DEV_MED, rep, md);
			put(R_FAULT_DEV_P99, rep, p99);
		} else if ((i + rep) % 2 == 1 && mnts[FMIN].has_file) {
			fault_latency(&mnts[FMIN], &md, &p99);
			put(R_FAULT_FMIN_MED, rep, md);
			put(R_FAULT_FMIN_P99, rep, p99);
		}
	}
}

/* Row 4. */
static void run_bw_rep(int rep)
{
	for (int i = 0; i < 2; i++) {
		int w = (i + rep) % 2 ? BW2 : BW1;
		int r = w == BW1 ? R_BW1_TO : R_BW2_TO;

		if (!mnts[w].has_file)
			continue;
		put(r, rep, migrate_mbps(&mnts[w], 0, &busy_ns[w][0]));
		put(r + 1, rep, migrate_mbps(&mnts[w], HMM_LOC_HOST, &busy_ns[w][1]));
	}
}

/* ------------------------------------------------------------- output */

static int nmet, nmissed, nunknown;

static void cell(double v, int width, int prec)
{
	if (v < 0)
		printf(" %*s", width, "-");
	else
		printf(" %*.*f", width, prec, v);
}

/*
 * One table line: value, baseline, their ratio, and the target check.
 * kind: '>' ratio >= target, '<' ratio <= target, '=' |ratio - 1| <= target.
 */
static void line(const char *name, const char *unit, double v, double base,
		 char kind, double target)
{
	double ratio = v >= 0 && base > 0 ? v / base : -1;
	char tgt[32];
	const char *verdict;

	if (kind == '>')
		snprintf(tgt, sizeof(tgt), ">= %.2f", target);
	else if (kind == '<')
		snprintf(tgt, sizeof(tgt), "<= %.2f", target);
	else if (kind == '=')
		snprintf(tgt, sizeof(tgt), "1 +- %.2f", target);
	else
		snprintf(tgt, sizeof(tgt), "%s", "");
	if (!kind)
		verdict = "";
	else if (ratio < 0)
		verdict = "n/a";
	else if ((kind == '>' && ratio >= target) || (kind == '<' && ratio <= target) ||
		 (kind == '=' && ratio >= 1 - target && ratio <= 1 + target))
		verdict = "met";
	else
		verdict = "MISSED";
	printf("%-46s %-5s", name, unit);
	cell(v, 10, 1);
	cell(base, 10, 1);
	cell(ratio, 7, 2);
	printf("  %-10s %s\n", tgt, verdict);
	if (kind) {
		if (!strcmp(verdict, "met"))
			nmet++;
		else if (!strcmp(verdict, "MISSED"))
			nmissed++;
		else
			nunknown++;
	}
}

static double busy_rate(int w, int dir, int r)
{
	/* Bytes the engines moved per second of engine time, per engine. */
	double bytes = (double)mnts[w].size * reps;

	if (!have[r] || busy_ns[w][dir] <= 0)
		return -1;
	return bytes / (busy_ns[w][dir] * 1e-9) / 1e6;
}

static void print_tables(void)
{
	double mc = med(R_MEMCPY), bw1 = -1, bw2 = -1;

	printf("\nDevice memory (issue 3): private device, median of %d repetitions; "
	       "1 MB = 10^6 bytes\n", reps);
	for (int w = 0; w < NMNT; w++) {
		if (!mnts[w].dir) {
			printf("  %-24s (skipped)\n", mnts[w].label);
			continue;
		}
		printf("  %-24s %s  read_ahead_kb %ld", mnts[w].label, mnts[w].dir, mnts[w].ra_kb);
		if (w != FMIN)
			printf("  device_mem %lluM, dma_engines %u, dma_bw %llu B/s%s",
			       (unsigned long long)(mnts[w].info.capacity >> 20),
			       mnts[w].info.dma_engines, (unsigned long long)mnts[w].info.dma_bw,
			       mnts[w].info.dma_bw ? "" : " (unthrottled)");
		printf("\n");
	}
	printf("Migration rows: the file's page cache is dropped before each timed migration; "
	       "each\nmigration is one hmm_file_migrate() of the whole %llu MiB file. "
	       "Baseline: memcpy of %llu MiB,\none call, one core, into an already-touched "
	       "buffer (for 2 engines: 2 x that).\n",
	       (unsigned long long)(file_size >> 20), (unsigned long long)(file_size >> 20));
	printf("Fault rows: MADV_RANDOM (each fault is one 4 KiB READ), %ld distinct random "
	       "pages, cold;\nlatency per load in microseconds (the ratio is hmmfs / fuse_min, "
	       "lower is better).\n\n", nfaults);

	printf("%-46s %-5s %10s %10s %7s  %-10s %s\n", "row", "unit", "value", "baseline",
	       "ratio", "target", "");
	line("memcpy 1 core, touched dst (baseline)", "MB/s", mc, -1, 0, 0);
	line("memcpy 1 core, touched dst, 4 KiB calls", "MB/s", med(R_MEMCPY_PAGES), mc, 0, 0);
	line("memcpy 1 core, fresh dst (page faults)", "MB/s", med(R_MEMCPY_FRESH), mc, 0, 0);
	line("memcpy 2 threads, touched dst", "MB/s", med(R_MEMCPY_2T), mc, 0, 0);
	line("migrate host->device, 1 engine", "MB/s", med(R_M1_TO), mc, '>', 0.8);
	line("migrate device->host, 1 engine", "MB/s", med(R_M1_FROM), mc, '>', 0.8);
	line("migrate host->device, 2 engines", "MB/s", med(R_M2_TO), mc > 0 ? 2 * mc : -1,
	     '>', 0.8);
	line("migrate device->host, 2 engines", "MB/s", med(R_M2_FROM), mc > 0 ? 2 * mc : -1,
	     '>', 0.8);
	line("  (same, vs 2-thread memcpy)", "MB/s", med(R_M2_TO), med(R_MEMCPY_2T), 0, 0);
	line("  (same, device->host, vs 2-thread memcpy)", "MB/s", med(R_M2_FROM),
	     med(R_MEMCPY_2T), 0, 0);
	line("  (1 engine host->device vs fresh-dst memcpy)", "MB/s", med(R_M1_TO),
	     med(R_MEMCPY_FRESH), 0, 0);
	line("  (1 engine device->host vs fresh-dst memcpy)", "MB/s", med(R_M1_FROM),
	     med(R_MEMCPY_FRESH), 0, 0);
	line("mmap read seq cold: device vs host RAM", "MB/s", med(R_MMAP_DEV), med(R_MMAP_HOST),
	     '>', 0.7);
	line("  mmap read seq cold, file in host RAM", "MB/s", med(R_MMAP_HOST), -1, 0, 0);
	line("random 4K fault median: device vs fuse_min", "us", med(R_FAULT_DEV_MED),
	     med(R_FAULT_FMIN_MED), '<', 1.5);
	line("random 4K fault p99: device vs fuse_min", "us", med(R_FAULT_DEV_P99),
	     med(R_FAULT_FMIN_P99), '<', 1.5);
	if (mnts[BW1].dir)
		bw1 = (double)mnts[BW1].info.dma_bw * mnts[BW1].info.dma_engines / 1e6;
	if (mnts[BW2].dir)
		bw2 = (double)mnts[BW2].info.dma_bw * mnts[BW2].info.dma_engines / 1e6;
	line("dma_bw, 1 engine: host->device vs setting", "MB/s", med(R_BW1_TO), bw1, '=', 0.05);
	line("dma_bw, 1 engine: device->host vs setting", "MB/s", med(R_BW1_FROM), bw1, '=', 0.05);
	line("dma_bw, 2 engines: host->device vs setting", "MB/s", med(R_BW2_TO), bw2, '=', 0.05);
	line("dma_bw, 2 engines: device->host vs setting", "MB/s", med(R_BW2_FROM), bw2, '=',
	     0.05);

	printf("\nDMA engine time (HMM_IOC_DEVICE_INFO dma_busy_ns): bytes moved per second of "
	       "engine busy time, per engine,\nagainst the wall-clock rate above "
	       "(a busy rate far above the wall rate = time lost outside the copies)\n");
	for (int w = DEV1; w <= BW2; w++) {
		int r = w == DEV1 ? R_M1_TO : w == DEV2 ? R_M2_TO : w == BW1 ? R_BW1_TO : R_BW2_TO;

		if (!mnts[w].has_file)
			continue;
		printf("  %-24s host->device busy %8.0f MB/s/engine, wall %8.0f MB/s; "
		       "device->host busy %8.0f, wall %8.0f\n", mnts[w].label,
		       busy_rate(w, 0, r) / 1, med(r), busy_rate(w, 1, r + 1), med(r + 1));
	}
	if (have[R_FAULT_DEV_MED]) {
		printf("  pages faulted back per fault repetition (cpu_faults delta):");
		for (int i = 0; i < reps; i++)
			printf(" %llu", (unsigned long long)fault_backs[i]);
		printf(" (of %ld loads)\n", nfaults);
	}
	if (not_cold)
		printf("  warning: some cold case still had pages cached after drop_caches\n");
	printf("\ntargets: %d met, %d missed, %d not measured (reported, never asserted)\n",
	       nmet, nmissed, nunknown);
	fflush(stdout);
}

/* ------------------------------------------------------------- main */

void usage(FILE *out)
{
	fprintf(out, "usage: bench_device [-v] [-r REPS] [-s SIZE] [-S BW_SIZE] [-n FAULTS]\n"
		     "                    DEV1_DIR DEV2_DIR BW1_DIR BW2_DIR FUSE_MIN_DIR\n"
		     "  a directory given as '-' skips the rows that need it\n");
}

int main(int argc, char **argv)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	unsigned char *picked;
	double t0 = now_s();
	int opt;

	while ((opt = getopt(argc, argv, "r:s:S:n:vh")) != -1) {
		switch (opt) {
		case 's':
			file_size = parse_size(optarg);
			break;
		case 'S':
			bw_size = parse_size(optarg);
			break;
		case 'n':
			nfaults = parse_count(optarg, "-n", 100, 100000);
			break;
		default:
			common_option(opt, optarg, &reps, &verbose);
		}
	}
	expect_operands(argc, NMNT);
	if ((uint64_t)nfaults > file_size / PAGE / 2)
		die("-n %ld: more than half the file's pages", nfaults);

	buf = aligned_alloc(PAGE, BLOCK);
	src_buf = aligned_alloc(PAGE, file_size);
	dst_buf = aligned_alloc(PAGE, file_size);
	fault_off = malloc((size_t)nfaults * sizeof(*fault_off));
	lat = malloc((size_t)nfaults * sizeof(*lat));
	picked = calloc(file_size / PAGE, 1);
	if (!buf || !src_buf || !dst_buf || !fault_off || !lat || !picked)
		die("out of memory");
	memset(src_buf, 0x3c, file_size);
	memset(dst_buf, 0xc3, file_size);
	for (long i = 0; i < nfaults; ) {
		uint64_t p = xorshift(&seed) % (file_size / PAGE);

		if (!picked[p]) {
			picked[p] = 1;
			fault_off[i++] = p * PAGE;
		}
	}
	free(picked);

	for (int w = 0; w < NMNT; w++) {
		struct mnt *m = &mnts[w];
		struct statfs sfs;

		if (!dir_operand(argv[optind + w], &sfs))
			continue;
		m->dir = argv[optind + w];
		if (sfs.f_type != FUSE_MAGIC)
			die("%s is not a FUSE mount", m->dir);
		m->ra_kb = read_ahead_kb(m->dir);
		snprintf(m->data, sizeof(m->data), "%s/bench_device.data", m->dir);
		if (w != FMIN) {
			int fd = xopen(m->dir, O_RDONLY | O_DIRECTORY);

			dev_info(fd, &m->info);
			close(fd);
			if (m->info.type != HMM_DEVICE_PRIVATE)
				die("%s: device 0 is not private", m->dir);
			if (m->info.capacity < (w <= DEV2 ? file_size : bw_size))
				die("%s: device_mem %llu is below the file size", m->dir,
				    (unsigned long long)m->info.capacity);
		}
		write_file(m, w == BW1 || w == BW2 ? bw_size : file_size);
		if (verbose)
			fprintf(stderr, "bench_device: %s written (%.1f s)\n", m->data,
				now_s() - t0);
	}
	fprintf(stderr, "bench_device: files written (%.1f s)\n", now_s() - t0);

	for (int rep = 0; rep < reps; rep++) {
		run_migration_rep(rep);
		if (mnts[DEV1].has_file)
			run_mmap_rep(rep);
		run_fault_rep(rep);
		run_bw_rep(rep);
		fprintf(stderr, "bench_device: repetition %d of %d done (%.1f s)\n", rep + 1,
			reps, now_s() - t0);
	}
	for (int w = 0; w < NMNT; w++)
		if (mnts[w].has_file)
			unlink(mnts[w].data);
	print_tables();
	return exit_status("data or migration errors");
}
