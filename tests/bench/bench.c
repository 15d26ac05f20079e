/* SPDX-License-Identifier: MIT */
/*
 * bench.c - hmmfs against its two baselines, measured in the same run.
 *
 * Usage: bench [-v] [-s SIZE] [-n OPS] [-r REPS] HMMFS_DIR TMPFS_DIR FUSE_MIN_DIR
 *   A directory given as "-" skips that column; -v prints every repetition.
 *
 * Every row runs the same operations on the same data on the three mounts:
 * hmmfs, a tmpfs (the kernel's own in-memory filesystem) and fuse_min (the
 * smallest reasonable FUSE filesystem, the ceiling of what any FUSE daemon
 * can reach here).  Repetitions are interleaved across the mounts, each
 * starting with a different one, so that machine noise hits all three
 * alike; each cell is the median of the repetitions.
 *
 * "cold" rows drop the file's page cache first (fsync, then
 * POSIX_FADV_DONTNEED, then drop_caches if pages are still resident, checked
 * with mincore), so on a FUSE mount every byte comes from the daemon.  A
 * tmpfs keeps its data in the page cache itself, so it has no cold state.
 * The metadata rows start with no dentries cached (drop_caches 2), so on a
 * FUSE mount each create, stat or unlink first costs a LOOKUP, whatever
 * entry timeout the daemon chose.
 *
 * Run it through run.sh (`make bench`), which mounts the three filesystems,
 * sets the FUSE mounts' read_ahead_kb to the same value and cleans up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"

#define NFS 3
#define TMPFS_MAGIC_NR 0x01021994

enum unit { MBPS, OPSPS };

struct fsys {
	const char *label;
	const char *dir;        /* NULL: column skipped */
	bool fuse;
	long ra_kb;             /* the mount's bdi read_ahead_kb, -1 if none */
	char data[512];         /* the shared data file the read rows use */
	char scratch[512];      /* the file the write rows create */
	bool not_cold;          /* a cold row found pages still cached */
};

struct row {
	const char *name;
	enum unit unit;
	double (*run)(struct fsys *fs);
	bool matters;           /* compared and marked when hmmfs is slow */
	bool metadata;          /* runs after drop_dentries() */
	double v[NFS][MAX_REPS];
	bool stayed_cached[NFS];
};

static struct fsys fss[NFS] = {
	{ .label = "hmmfs" }, { .label = "tmpfs" }, { .label = "fuse_min" },
};
static uint64_t file_size = (uint64_t)1 << 30;
static long nops = 20000;
static int reps = 3;
static bool verbose;          /* -v: every repetition on stderr */
static char *buf;              /* one block, the source and sink of data */
static uint64_t *rand_off;     /* the random read offsets, the same everywhere */

const char *const bench_prog = "bench";

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void write_file(const char *path)
{
	int fd = xopen(path, O_CREAT | O_EXCL | O_WRONLY);

	write_stamped(fd, path, file_size, buf);
	xclose(fd, path);
}

/* Make the next read of path come from the daemon.  Context: not timed. */
static void make_cold(struct fsys *fs, const char *path)
{
	int fd;

	if (!fs->fuse)
		return;
	fd = xopen(path, O_RDONLY);
	if (drop_file_cache(fd, file_size))
		fs->not_cold = true;
	xclose(fd, path);
}

/* Make the next read of path come from the page cache.  Context: not timed. */
static void make_warm(struct fsys *fs, const char *path)
{
	int fd = xopen(path, O_RDONLY);

	if (resident(fd, file_size) < 0.999) {
		for (uint64_t off = 0; off < file_size; off += BLOCK)
			if (pread(fd, buf, BLOCK, (off_t)off) != (ssize_t)BLOCK)
				die("read %s: %s", path, strerror(errno));
	}
	xclose(fd, path);
}

static double mbps(double secs)
{
	return (double)file_size / secs / 1e6;
}

/* Rows.  Each returns MB/s or ops/s for one repetition on one mount. */

static double seq_write(struct fsys *fs)
{
	double t = now_s();

	write_file(fs->scratch);
	t = now_s() - t;
	unlink(fs->scratch);
	return mbps(t);
}

static double seq_read(struct fsys *fs)
{
	int fd = xopen(fs->data, O_RDONLY);
	double t = now_s();

	for (uint64_t off = 0; off < file_size; off += BLOCK) {
		if (read(fd, buf, BLOCK) != (ssize_t)BLOCK)
			die("read %s: %s", fs->data, strerror(errno));
		check_stamp(buf, off / BLOCK);
	}
	t = now_s() - t;
	xclose(fd, fs->data);
	return mbps(t);
}

static double seq_read_cold(struct fsys *fs)
{
	make_cold(fs, fs->data);
	return seq_read(fs);
}

static double seq_read_warm(struct fsys *fs)
{
	make_warm(fs, fs->data);
	return seq_read(fs);
}

static double mmap_write(struct fsys *fs)
{
	double t = now_s();
	int fd = xopen(fs->scratch, O_CREAT | O_EXCL | O_RDWR);
	char *map;

	if (ftruncate(fd, (off_t)file_size) != 0)
		die("ftruncate %s: %s", fs->scratch, strerror(errno));
	map = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap %s: %s", fs->scratch, strerror(errno));
	for (uint64_t off = 0; off < file_size; off += BLOCK) {
		stamp(buf, off / BLOCK);
		memcpy(map + off, buf, BLOCK);
	}
	if (msync(map, file_size, MS_SYNC) != 0)
		die("msync %s: %s", fs->scratch, strerror(errno));
	munmap(map, file_size);
	xclose(fd, fs->scratch);
	t = now_s() - t;
	unlink(fs->scratch);
	return mbps(t);
}

static double mmap_read(struct fsys *fs)
{
	int fd = xopen(fs->data, O_RDONLY);
	double t = now_s();
	char *map = mmap(NULL, file_size, PROT_READ, MAP_SHARED, fd, 0);

	if (map == MAP_FAILED)
		die("mmap %s: %s", fs->data, strerror(errno));
	for (uint64_t off = 0; off < file_size; off += BLOCK) {
		memcpy(buf, map + off, BLOCK);
		check_stamp(buf, off / BLOCK);
	}
	munmap(map, file_size);
	t = now_s() - t;
	xclose(fd, fs->data);
	return mbps(t);
}

static double mmap_read_cold(struct fsys *fs)
{
	make_cold(fs, fs->data);
	return mmap_read(fs);
}

static double mmap_read_warm(struct fsys *fs)
{
	make_warm(fs, fs->data);
	return mmap_read(fs);
}

static double rand_read(struct fsys *fs)
{
	int fd = xopen(fs->data, O_RDONLY);
	double t = now_s();

	for (long i = 0; i < nops; i++)
		if (pread(fd, buf, PAGE, (off_t)rand_off[i]) != PAGE)
			die("pread %s: %s", fs->data, strerror(errno));
	t = now_s() - t;
	xclose(fd, fs->data);
	return (double)nops / t;
}

static double rand_read_cold(struct fsys *fs)
{
	make_cold(fs, fs->data);
	return rand_read(fs);
}

/* Runs right after the cold row, which left exactly these pages cached. */
static double rand_read_warm(struct fsys *fs)
{
	return rand_read(fs);
}

static void meta_name(char *out, size_t len, struct fsys *fs, long i)
{
	snprintf(out, len, "%s/m%06ld", fs->dir, i);
}

static double meta_create(struct fsys *fs)
{
	char path[600];
	double t = now_s();

	for (long i = 0; i < nops; i++) {
		meta_name(path, sizeof(path), fs, i);
		xclose(xopen(path, O_CREAT | O_EXCL | O_WRONLY), path);
	}
	return (double)nops / (now_s() - t);
}

static double meta_stat(struct fsys *fs)
{
	char path[600];
	struct stat st;
	double t = now_s();

	for (long i = 0; i < nops; i++) {
		meta_name(path, sizeof(path), fs, i);
		if (stat(path, &st) != 0)
			die("stat %s: %s", path, strerror(errno));
	}
	return (double)nops / (now_s() - t);
}

static double meta_unlink(struct fsys *fs)
{
	char path[600];
	double t = now_s();

	for (long i = 0; i < nops; i++) {
		meta_name(path, sizeof(path), fs, i);
		if (unlink(path) != 0)
			die("unlink %s: %s", path, strerror(errno));
	}
	return (double)nops / (now_s() - t);
}

static struct row rows[] = {
	{ .name = "write seq 1M (write+fsync)", .unit = MBPS, .run = seq_write, .matters = true },
	{ .name = "read seq 1M cold", .unit = MBPS, .run = seq_read_cold, .matters = true },
	{ .name = "read seq 1M warm", .unit = MBPS, .run = seq_read_warm },
	{ .name = "mmap write seq (memcpy+msync)", .unit = MBPS, .run = mmap_write, .matters = true },
	{ .name = "mmap read seq cold", .unit = MBPS, .run = mmap_read_cold, .matters = true },
	{ .name = "mmap read seq warm", .unit = MBPS, .run = mmap_read_warm },
	{ .name = "pread 4K random cold", .unit = OPSPS, .run = rand_read_cold, .matters = true },
	{ .name = "pread 4K random warm", .unit = OPSPS, .run = rand_read_warm },
	{ .name = "create+close", .unit = OPSPS, .run = meta_create, .matters = true,
	  .metadata = true },
	{ .name = "stat", .unit = OPSPS, .run = meta_stat, .matters = true, .metadata = true },
	{ .name = "unlink", .unit = OPSPS, .run = meta_unlink, .matters = true, .metadata = true },
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* Each repetition starts with a different mount, so that nothing that
 * depends on the order (what ran just before, a noisy neighbour waking up)
 * always hits the same column. */
static void run_row(struct row *r, int rep)
{
	for (int i = 0; i < NFS; i++) {
		int f = (i + rep) % NFS;

		if (!fss[f].dir)
			continue;
		fss[f].not_cold = false;
		r->v[f][rep] = r->run(&fss[f]);
		if (verbose)
			fprintf(stderr, "bench: %-30s %-9s rep %d: %.0f\n", r->name,
				fss[f].label, rep + 1, r->v[f][rep]);
		if (fss[f].not_cold)
			r->stayed_cached[f] = true;
	}
}

/*
 * Evict unused dentries and inodes everywhere, so that each name on a FUSE
 * mount costs a LOOKUP again whatever entry timeout its daemon chose (hmmfs
 * and fuse_min need not agree).  The FORGETs this sends are given time to
 * drain so that they do not run inside the timed loop.  tmpfs keeps its
 * dentries: they are its directory.  Context: not timed.
 */
static void drop_dentries(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (fd < 0 || write(fd, "2", 1) != 1)
		die("drop_caches: %s", strerror(errno));
	close(fd);
	sleep_s(0.3);
}

static void run_all(void)
{
	for (int rep = 0; rep < reps; rep++) {
		for (size_t i = 0; i < NROWS; i++) {
			if (rows[i].metadata)
				drop_dentries();
			run_row(&rows[i], rep);
		}
		fprintf(stderr, "bench: repetition %d of %d done\n", rep + 1, reps);
	}
}

static double memcpy_mbps(void)
{
	size_t len = (size_t)256 << 20;
	char *a = malloc(len), *b = malloc(len);
	double best = 0;

	if (!a || !b)
		die("out of memory");
	memset(a, 1, len);
	memset(b, 2, len);
	for (int i = 0; i < 3; i++) {
		double t = now_s();

		for (size_t off = 0; off < len; off += BLOCK)
			memcpy(b + off, a + off, BLOCK);
		t = now_s() - t;
		if (len / t / 1e6 > best)
			best = (double)len / t / 1e6;
	}
	free(a);
	free(b);
	return best;
}

static void print_header(void)
{
	struct utsname u;

	uname(&u);
	printf("hmmfs benchmark: %ld CPUs online, kernel %s %s, %s\n",
	       sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, u.machine);
	printf("file %llu MiB, I/O blocks 1 MiB, random reads %ld x 4 KiB, "
	       "metadata %ld files, median of %d repetitions\n",
	       (unsigned long long)(file_size >> 20), nops, nops, reps);
	printf("memcpy 1 MiB blocks, one core: %.0f MB/s (1 MB = 10^6 bytes)\n",
	       memcpy_mbps());
	for (int f = 0; f < NFS; f++) {
		if (!fss[f].dir) {
			printf("  %-9s (skipped)\n", fss[f].label);
			continue;
		}
		printf("  %-9s %s  ", fss[f].label, fss[f].dir);
		if (fss[f].ra_kb >= 0)
			printf("read_ahead_kb %ld\n", fss[f].ra_kb);
		else
			printf("no bdi read-ahead\n");
	}
	printf("cold = page cache dropped (fsync, fadvise DONTNEED, checked with mincore); "
	       "tmpfs has no cold state\n");
	printf("create+close, stat, unlink: one file each, dentries dropped first "
	       "(a LOOKUP each on FUSE)\n");
	printf("'<' marks a row where hmmfs is below 0.8 x fuse_min "
	       "(warm rows, served by the page cache alone, are not marked)\n\n");
}

static void print_cell(double v)
{
	if (v < 0)
		printf(" %10s", "-");
	else
		printf(" %10.0f", v);
}

static void print_ratio(double a, double b)
{
	if (a < 0 || b <= 0)
		printf(" %10s", "-");
	else
		printf(" %10.2f", a / b);
}

static void print_table(void)
{
	printf("%-30s %-5s %10s %10s %10s %10s %10s\n", "row", "unit", "hmmfs", "tmpfs",
	       "fuse_min", "h/fuse_min", "h/tmpfs");
	for (size_t i = 0; i < NROWS; i++) {
		struct row *r = &rows[i];
		double m[NFS];
		bool slow;

		for (int f = 0; f < NFS; f++)
			m[f] = fss[f].dir ? median(r->v[f], reps) : -1;
		slow = r->matters && m[0] >= 0 && m[2] > 0 && m[0] / m[2] < 0.8;
		printf("%-30s %-5s", r->name, r->unit == MBPS ? "MB/s" : "ops/s");
		for (int f = 0; f < NFS; f++)
			print_cell(m[f]);
		print_ratio(m[0], m[2]);
		print_ratio(m[0], m[1]);
		printf("%s", slow ? "  <" : "");
		for (int f = 0; f < NFS; f++)
			if (r->stayed_cached[f])
				printf("  (%s: pages stayed cached)", fss[f].label);
		printf("\n");
	}
	fflush(stdout);
}

void usage(FILE *out)
{
	fprintf(out, "usage: bench [-v] [-s SIZE] [-n OPS] [-r REPS] HMMFS_DIR TMPFS_DIR FUSE_MIN_DIR\n"
		     "  a directory given as '-' skips that column\n");
}

int main(int argc, char **argv)
{
	uint64_t seed = 0x2545f4914f6cdd1dull;
	int opt;

	while ((opt = getopt(argc, argv, "s:n:r:vh")) != -1) {
		switch (opt) {
		case 's':
			file_size = parse_size(optarg);
			break;
		case 'n':
			nops = parse_count(optarg, "-n", 1, 1000000);
			break;
		default:
			common_option(opt, optarg, &reps, &verbose);
		}
	}
	expect_operands(argc, NFS);
	for (int f = 0; f < NFS; f++) {
		struct fsys *fs = &fss[f];
		struct statfs sfs;

		if (!dir_operand(argv[optind + f], &sfs))
			continue;
		fs->dir = argv[optind + f];
		fs->fuse = sfs.f_type == FUSE_MAGIC;
		if (f != 1 && !fs->fuse)
			die("%s is not a FUSE mount", fs->dir);
		if (f == 1 && sfs.f_type != TMPFS_MAGIC_NR)
			die("%s is not a tmpfs", fs->dir);
		fs->ra_kb = fs->fuse ? read_ahead_kb(fs->dir) : -1;
		snprintf(fs->data, sizeof(fs->data), "%s/bench.data", fs->dir);
		snprintf(fs->scratch, sizeof(fs->scratch), "%s/bench.scratch", fs->dir);
	}

	buf = aligned_alloc(PAGE, BLOCK);
	rand_off = malloc((size_t)nops * sizeof(*rand_off));
	if (!buf || !rand_off)
		die("out of memory");
	memset(buf, 0x5a, BLOCK);
	for (long i = 0; i < nops; i++)
		rand_off[i] = (xorshift(&seed) % (file_size / PAGE)) * PAGE;

	print_header();
	for (int f = 0; f < NFS; f++)
		if (fss[f].dir) {
			unlink(fss[f].data);
			unlink(fss[f].scratch);
			write_file(fss[f].data);
		}
	run_all();
	for (int f = 0; f < NFS; f++)
		if (fss[f].dir)
			unlink(fss[f].data);
	print_table();
	return exit_status("blocks read back wrong");
}
