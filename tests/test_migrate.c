/* SPDX-License-Identifier: MIT */
/*
 * test_migrate.c - moving file pages between host RAM and simulated devices
 * on a real mount: round trips that keep every byte, residency reported page
 * for page, CPU access that brings private-device pages back and leaves
 * coherent ones in place, mmap stores that survive a migration, holes,
 * truncation and punching over device pages, ENOSPC, bad ioctl arguments,
 * the device counters, and migrations racing with every kind of CPU access.
 *
 * Residency is checked through a model: an array with the location of every
 * page (HMM_LOC_HOLE, HMM_LOC_HOST or a device), which the tests update with
 * what each operation must do and compare with HMM_IOC_RESIDENCY, after
 * checking that the ranges it returns are well formed (adjacent, merged, the
 * last one ending at the size).
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"

#include <hmm.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#define MiB (1024LL * 1024)

/* The devices of the main suites: two private devices around a coherent one. */
#define PRIV 0
#define COH 1
#define PRIV2 2
#define HOST HMM_LOC_HOST
#define HOLE HMM_LOC_HOLE

static void setup_three_devices(void)
{
	mnt_setup_opts("host_mem=64M,devices=3,device_mem=8M,"
		       "device_type=private:coherent:private");
}

/* Devices of 64 KiB: 16 pages of 4 KiB. */
static void setup_small_evict_none(void)
{
	mnt_setup_opts("host_mem=16M,devices=2,device_mem=64K,device_type=private:coherent,"
		       "evict=none");
}

static void setup_small_evict_lru(void)
{
	mnt_setup_opts("host_mem=16M,devices=2,device_mem=64K,device_type=private:coherent,"
		       "evict=lru");
}

/* Throttled DMA so that the busy time has a lower bound to check. */
#define COUNTERS_BW (100LL * MiB)
static void setup_counters(void)
{
	mnt_setup_opts("host_mem=16M,devices=2,device_mem=1M,device_type=private:coherent,"
		       "dma_bw=100M");
}

static void setup_one_worker(void)
{
	mnt_setup_opts("host_mem=64M,devices=3,device_mem=8M,"
		       "device_type=private:coherent:private,max_threads=1");
}

static void setup_small_host(void)
{
	mnt_setup_opts("host_mem=64K,devices=1,device_mem=1M,device_type=private");
}

static void setup_no_devices(void)
{
	mnt_setup_opts("host_mem=1M");
}

#define BIG_PAGE (64 * 1024LL)
static void setup_big_pages(void)
{
	mnt_setup_opts("page_size=64K,host_mem=4M,devices=2,device_mem=1M,"
		       "device_type=private:coherent");
}

TestSuite(migrate, .init = setup_three_devices, .fini = mnt_teardown);
TestSuite(cpu_access, .init = setup_three_devices, .fini = mnt_teardown);
TestSuite(migrate_args, .init = setup_three_devices, .fini = mnt_teardown);
TestSuite(migrate_race, .init = setup_three_devices, .fini = mnt_teardown);
TestSuite(one_worker, .init = setup_one_worker, .fini = mnt_teardown);
TestSuite(evict_none, .init = setup_small_evict_none, .fini = mnt_teardown);
TestSuite(evict_lru, .init = setup_small_evict_lru, .fini = mnt_teardown);
TestSuite(device_counters, .init = setup_counters, .fini = mnt_teardown);
TestSuite(host_full, .init = setup_small_host, .fini = mnt_teardown);
TestSuite(no_devices, .init = setup_no_devices, .fini = mnt_teardown);
TestSuite(migrate_bigpage, .init = setup_big_pages, .fini = mnt_teardown);

/* ------------------------------------------------------------------ helpers */

static const char *loc_name(int loc)
{
	static __thread char buf[8][24];
	static __thread unsigned next;
	char *b = buf[next++ % 8];

	if (loc == HOLE)
		return "hole";
	if (loc == HOST)
		return "host";
	snprintf(b, sizeof(buf[0]), "device %d", loc);
	return b;
}

static long long pages_of(long long bytes)
{
	return (bytes + page() - 1) / page();
}

static struct hmm_device_info dev_info(int fd, unsigned index)
{
	struct hmm_device_info info;
	int rc = hmm_device_info(fd, index, &info);

	cr_assert_eq(rc, 0, "hmm_device_info(%u): %s", index, strerror(-rc));
	cr_assert_eq(info.index, index);
	return info;
}

static uint64_t dev_used_pages(int fd, unsigned index)
{
	return dev_info(fd, index).used / (uint64_t)page();
}

/* The raw ioctl, so that the daemon's own checks are reached. */
static int migrate_raw(int fd, uint64_t off, uint64_t len, int32_t dest, uint32_t flags,
		       struct hmm_migrate *out)
{
	struct hmm_migrate m = { .offset = off, .length = len, .dest = dest, .flags = flags };
	int rc = ioctl(fd, HMM_IOC_MIGRATE, &m);

	if (out)
		*out = m;
	return rc;
}

static void migrate_ok(int fd, long long off, long long len, int dest, long long moved,
		       long long skipped)
{
	struct hmm_migrate m;
	int rc = hmm_file_migrate(fd, (uint64_t)off, (uint64_t)len, dest, &m);

	cr_assert_eq(rc, 0, "migrate [%lld, +%lld) to %s: %s", off, len, loc_name(dest),
		     strerror(-rc));
	if (moved >= 0)
		cr_assert_eq(m.moved, (uint64_t)moved, "migrate [%lld, +%lld) to %s moved %llu, "
			     "expected %lld", off, len, loc_name(dest),
			     (unsigned long long)m.moved, moved);
	if (skipped >= 0)
		cr_assert_eq(m.skipped, (uint64_t)skipped, "migrate [%lld, +%lld) to %s skipped "
			     "%llu, expected %lld", off, len, loc_name(dest),
			     (unsigned long long)m.skipped, skipped);
}

/*
 * Read the residency of the whole file into locs (one entry per page, up to
 * max pages), checking that the answer is well formed.  Return: the size.
 */
static long long read_locs(int fd, int *locs, long long max)
{
	struct hmm_residency *r = malloc(sizeof(*r));
	long long size = -1, ps = page(), calls = 0;
	uint32_t ndev = 64;
	uint64_t off = 0;
	struct hmm_device_info info;

	cr_assert_not_null(r);
	if (hmm_device_info(fd, 0, &info) == 0)
		ndev = info.ndevices;
	else
		ndev = 0;
	for (;;) {
		int rc = hmm_file_residency(fd, off, r);
		uint64_t at = off;

		cr_assert_eq(rc, 0, "residency from %llu: %s", (unsigned long long)off,
			     strerror(-rc));
		cr_assert_eq(r->offset, off);
		cr_assert_eq(r->page_size, (uint32_t)ps, "page_size %u", r->page_size);
		if (size < 0) {
			size = (long long)r->size;
			cr_assert_leq(pages_of(size), max, "file of %lld bytes is larger than the "
				      "model", size);
		} else {
			cr_assert_eq(r->size, (uint64_t)size, "the size changed between calls");
		}
		cr_assert_leq(r->count, HMM_RESIDENCY_RANGES);
		for (uint32_t k = 0; k < r->count; k++) {
			const struct hmm_residency_range *g = &r->ranges[k];

			cr_assert_eq(g->offset, at, "range %u starts at %llu, expected %llu", k,
				     (unsigned long long)g->offset, (unsigned long long)at);
			cr_assert_gt(g->length, 0, "range %u is empty", k);
			cr_assert(g->location == HOLE || g->location == HOST ||
				  (g->location >= 0 && (uint32_t)g->location < ndev),
				  "range %u has location %d", k, g->location);
			cr_assert_eq(g->reserved, 0);
			if (k)
				cr_assert_neq(g->location, r->ranges[k - 1].location,
					      "ranges %u and %u are both %s: not merged", k - 1, k,
					      loc_name(g->location));
			if (at + g->length != (uint64_t)size)
				cr_assert_eq(g->length % ps, 0, "range %u of %llu bytes ends inside a "
					     "page before the end of the file", k,
					     (unsigned long long)g->length);
			cr_assert_leq(at + g->length, (uint64_t)size, "range %u ends past the size",
				      k);
			for (uint64_t p = at / ps; p < (at + g->length + ps - 1) / ps; p++)
				locs[p] = g->location;
			at += g->length;
		}
		cr_assert_eq(r->next, at, "next %llu but the ranges end at %llu",
			     (unsigned long long)r->next, (unsigned long long)at);
		if (r->next == r->size)
			break;
		cr_assert_eq(r->count, HMM_RESIDENCY_RANGES,
			     "an incomplete answer (next %llu of %llu) must be full",
			     (unsigned long long)r->next, (unsigned long long)r->size);
		cr_assert_gt(r->next, off);
		off = r->next;
		cr_assert_lt(++calls, 100000);
	}
	free(r);
	return size;
}

/* The file's residency must be exactly want[0 .. pages_of(size)). */
static void expect_locs(int fd, const int *want, long long size, const char *when)
{
	long long n = pages_of(size);
	int *got = malloc((n + 1) * sizeof(*got));
	long long got_size;

	cr_assert_not_null(got);
	got_size = read_locs(fd, got, n + 1);
	cr_assert_eq(got_size, size, "%s: residency reports size %lld, expected %lld", when,
		     got_size, size);
	for (long long i = 0; i < n; i++)
		cr_assert_eq(got[i], want[i], "%s: page %lld is at %s, expected %s", when, i,
			     loc_name(got[i]), loc_name(want[i]));
	free(got);
}

static int *new_locs(long long n, int loc)
{
	int *a = malloc((n + 1) * sizeof(*a));

	cr_assert_not_null(a);
	for (long long i = 0; i <= n; i++)
		a[i] = loc;
	return a;
}

static void set_locs(int *locs, long long first, long long end, int loc)
{
	for (long long i = first; i < end; i++)
		locs[i] = loc;
}

static long long count_locs(const int *locs, long long n, int loc)
{
	long long k = 0;

	for (long long i = 0; i < n; i++)
		k += locs[i] == loc;
	return k;
}

/*
 * Migrate pages [first, first + count) (count < 0: to the end of the file,
 * length 0) to dest; check moved and skipped against the model, update it
 * and check the residency.
 */
static void hop(int fd, int *locs, long long size, long long first, long long count, int dest)
{
	long long n = pages_of(size), end = count < 0 ? n : first + count;
	long long moved = 0, skipped = 0;
	char when[96];

	if (end > n)
		end = n;
	for (long long i = first; i < end; i++) {
		if (locs[i] == HOLE)
			continue;
		if (locs[i] == dest) {
			skipped++;
		} else {
			moved++;
			locs[i] = dest;
		}
	}
	migrate_ok(fd, first * page(), count < 0 ? 0 : count * page(), dest, moved, skipped);
	snprintf(when, sizeof(when), "after migrating pages [%lld, %lld) to %s", first,
		 count < 0 ? -1 : first + count, loc_name(dest));
	expect_locs(fd, locs, size, when);
}

/* Read the whole file from the daemon (not the page cache); it must carry seed. */
static void expect_file_pattern(int fd, long long size, unsigned seed)
{
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	cr_assert_eq(fd_stat(fd).st_size, size);
	expect_pattern(fd, 0, size, seed);
}

/* Read [off, off + len) and compare with want; say where the first difference is. */
static void expect_bytes(int fd, long long off, const unsigned char *want, size_t len,
			 const char *what)
{
	unsigned char *buf = malloc(len ? len : 1);
	ssize_t n = pread(fd, buf, len, off);

	cr_assert_eq(n, (ssize_t)len, "%s: pread returned %zd (%s)", what, n,
		     n < 0 ? strerror(errno) : "short");
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(buf[i], want[i], "%s: byte %lld is 0x%02x, expected 0x%02x", what,
			     off + (long long)i, buf[i], want[i]);
	free(buf);
}

static void expect_zeros(int fd, long long off, size_t len, const char *what)
{
	unsigned char *zero = calloc(1, len ? len : 1);

	expect_bytes(fd, off, zero, len, what);
	free(zero);
}

/* A file of npages pages of pattern seed, all in host RAM. */
static int pattern_file(const char *name, long long size, unsigned seed)
{
	int fd = create_file(name);

	write_pattern(fd, 0, size, seed);
	return fd;
}

/* The daemon still answers: a write, a read from it, and a migration round trip. */
static void expect_daemon_serves(void)
{
	static int serial;
	char name[32];
	int fd, *locs;

	snprintf(name, sizeof(name), "alive%d", serial++);
	fd = pattern_file(name, 3 * page() + 5, 77);
	locs = new_locs(4, HOST);
	expect_file_pattern(fd, 3 * page() + 5, 77);
	hop(fd, locs, 3 * page() + 5, 0, -1, PRIV);
	hop(fd, locs, 3 * page() + 5, 0, -1, HOST);
	expect_file_pattern(fd, 3 * page() + 5, 77);
	free(locs);
	close(fd);
	cr_assert_eq(unlink(mp(name)), 0);
}

/* ---------------------------------------------------------------- round trips */

struct trip {
	int mib, pages, extra;   /* size = mib MiB + pages pages + extra bytes */
	int first, count;        /* the range migrated, in pages; count -1: to EOF */
	char what[64];           /* no pointers: Criterion runs each case in a new process */
};

#define SIZES(range_first, range_count, range_what)                                         \
	{ 0, 0, 1, range_first, range_count, "1 byte, " range_what },                      \
	{ 0, 1, -1, range_first, range_count, "a page less one byte, " range_what },       \
	{ 0, 1, 0, range_first, range_count, "one page, " range_what },                    \
	{ 0, 1, 1, range_first, range_count, "a page and one byte, " range_what },         \
	{ 0, 37, 0, range_first, range_count, "37 pages, " range_what },                   \
	{ 1, 0, 3, range_first, range_count, "1 MiB and 3 bytes, " range_what }

ParameterizedTestParameters(migrate, round_trips_between_host_and_devices_keep_every_byte)
{
	static struct trip trips[] = {
		SIZES(0, -1, "the whole file"),
		SIZES(0, 1, "the first page"),
		SIZES(1, 2, "pages 1 and 2"),
		SIZES(3, 1000, "from page 3 to past the end"),
	};
	return cr_make_param_array(struct trip, trips, sizeof(trips) / sizeof(trips[0]));
}

ParameterizedTest(struct trip *t, migrate, round_trips_between_host_and_devices_keep_every_byte)
{
	long long size = t->mib * MiB + t->pages * page() + t->extra, n = pages_of(size);
	int fd = pattern_file("f", size, 11), *locs = new_locs(n, HOST);

	cr_log_info("%s", t->what);
	expect_locs(fd, locs, size, "after writing");

	/* host -> private: a read of every page brings every page back. */
	hop(fd, locs, size, t->first, t->count, PRIV);
	expect_file_pattern(fd, size, 11);
	for (long long i = 0; i < n; i++)
		if (locs[i] == PRIV)
			locs[i] = HOST;
	expect_locs(fd, locs, size, "after reading pages from the private device");

	/* host -> private -> host. */
	hop(fd, locs, size, t->first, t->count, PRIV);
	hop(fd, locs, size, t->first, t->count, HOST);
	expect_file_pattern(fd, size, 11);
	expect_locs(fd, locs, size, "after reading pages back in host RAM");

	/* host -> coherent -> host: reading leaves the pages on the device. */
	hop(fd, locs, size, t->first, t->count, COH);
	expect_file_pattern(fd, size, 11);
	expect_locs(fd, locs, size, "after reading pages on the coherent device");
	hop(fd, locs, size, t->first, t->count, HOST);
	expect_file_pattern(fd, size, 11);

	/* private -> coherent -> private (device to device) -> host. */
	hop(fd, locs, size, t->first, t->count, PRIV);
	hop(fd, locs, size, t->first, t->count, COH);
	expect_file_pattern(fd, size, 11);
	expect_locs(fd, locs, size, "after reading pages moved from device to device");
	hop(fd, locs, size, t->first, t->count, PRIV2);
	hop(fd, locs, size, t->first, t->count, HOST);
	expect_file_pattern(fd, size, 11);

	for (int d = 0; d < 3; d++)
		cr_assert_eq(dev_used_pages(fd, d), 0, "device %d still holds pages", d);
	free(locs);
	close(fd);
}

Test(migrate, migrating_to_where_the_pages_already_are_moves_nothing_and_skips_them)
{
	long long size = 8 * page();
	int fd = pattern_file("f", size, 3);

	migrate_ok(fd, 0, 0, HOST, 0, 8);
	migrate_ok(fd, 2 * page(), 3 * page(), COH, 3, 0);
	migrate_ok(fd, 0, 0, COH, 5, 3);
	migrate_ok(fd, 0, 0, COH, 0, 8);
	migrate_ok(fd, 0, 0, HOST, 8, 0);
	expect_file_pattern(fd, size, 3);
	close(fd);
}

Test(migrate, a_range_past_the_end_of_the_file_moves_nothing_and_succeeds)
{
	long long size = 3 * page() + 1;
	int fd = pattern_file("f", size, 4), *locs = new_locs(4, HOST);

	migrate_ok(fd, 4 * page(), 0, PRIV, 0, 0);
	migrate_ok(fd, 100 * page(), 5 * page(), PRIV, 0, 0);
	expect_locs(fd, locs, size, "after migrating nothing");
	cr_assert_eq(dev_used_pages(fd, PRIV), 0);
	free(locs);
	close(fd);
}

Test(migrate, an_empty_file_has_no_ranges_and_migrates_nothing)
{
	int fd = create_file("f");
	struct hmm_residency *r = malloc(sizeof(*r));

	cr_assert_eq(hmm_file_residency(fd, 0, r), 0);
	cr_assert_eq(r->size, 0);
	cr_assert_eq(r->count, 0);
	cr_assert_eq(r->next, 0);
	migrate_ok(fd, 0, 0, PRIV, 0, 0);
	free(r);
	close(fd);
}

Test(migrate, residency_from_an_offset_starts_there_and_from_past_the_end_is_empty)
{
	long long size = 10 * page() + 9;
	int fd = pattern_file("f", size, 5);
	struct hmm_residency *r = malloc(sizeof(*r));

	migrate_ok(fd, 6 * page(), 2 * page(), COH, 2, 0);
	cr_assert_eq(hmm_file_residency(fd, 4 * page(), r), 0);
	cr_assert_eq(r->size, (uint64_t)size);
	cr_assert_eq(r->count, 3);
	cr_assert_eq(r->ranges[0].offset, 4 * page());
	cr_assert_eq(r->ranges[0].length, 2 * page());
	cr_assert_eq(r->ranges[0].location, HOST);
	cr_assert_eq(r->ranges[1].offset, 6 * page());
	cr_assert_eq(r->ranges[1].length, 2 * page());
	cr_assert_eq(r->ranges[1].location, COH);
	cr_assert_eq(r->ranges[2].offset, 8 * page());
	cr_assert_eq(r->ranges[2].length, 2 * page() + 9, "the last range ends at the size");
	cr_assert_eq(r->ranges[2].location, HOST);
	cr_assert_eq(r->next, (uint64_t)size);

	cr_assert_eq(hmm_file_residency(fd, 20 * page(), r), 0);
	cr_assert_eq(r->count, 0);
	cr_assert_eq(r->next, (uint64_t)size);
	free(r);
	close(fd);
}

Test(migrate, residency_of_more_than_256_ranges_continues_from_next)
{
	long long n = 2 * HMM_RESIDENCY_RANGES + 88, size = n * page();
	int fd = create_file("f"), *locs = new_locs(n, HOLE);
	struct hmm_residency *r = malloc(sizeof(*r));

	cr_assert_eq(ftruncate(fd, size), 0);
	/* Alternate host, hole, device 1, hole, ...: every page its own range. */
	for (long long i = 0; i < n; i += 2) {
		write_pattern(fd, i * page(), 10, 6);
		locs[i] = HOST;
	}
	for (long long i = 0; i < n; i += 4) {
		migrate_ok(fd, i * page(), page(), COH, 1, 0);
		locs[i] = COH;
	}
	expect_locs(fd, locs, size, "alternating pages");
	cr_assert_eq(hmm_file_residency(fd, 0, r), 0);
	cr_assert_eq(r->count, HMM_RESIDENCY_RANGES);
	cr_assert_eq(r->next, HMM_RESIDENCY_RANGES * page());
	free(r);
	free(locs);
	close(fd);
}

Test(migrate, a_file_open_write_only_can_be_migrated)
{
	long long size = 5 * page();
	int fd = pattern_file("f", size, 8), wfd = open(mp("f"), O_WRONLY);

	cr_assert_geq(wfd, 0);
	migrate_ok(wfd, 0, 0, PRIV, 5, 0);
	cr_assert_eq(dev_used_pages(fd, PRIV), 5);
	expect_file_pattern(fd, size, 8);
	close(wfd);
	close(fd);
}

/* ---------------------------------------------------------------- CPU access */

/* 64 pages of pattern 21, all moved to dev. */
static int file_on(int dev, int **locs)
{
	int fd = pattern_file("f", 64 * page(), 21);

	*locs = new_locs(64, HOST);
	hop(fd, *locs, 64 * page(), 0, -1, dev);
	return fd;
}

Test(cpu_access, pread_of_one_private_page_with_random_advice_brings_back_exactly_that_page)
{
	int *locs, fd = file_on(PRIV, &locs);
	struct hmm_device_info before = dev_info(fd, PRIV), after;

	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
	expect_pattern(fd, 10 * page(), page(), 21);
	locs[10] = HOST;
	expect_locs(fd, locs, 64 * page(), "after reading page 10");
	after = dev_info(fd, PRIV);
	cr_assert_eq(after.cpu_faults, before.cpu_faults + 1);
	cr_assert_eq(after.pages_out, before.pages_out + 1);
	cr_assert_eq(after.bytes_out, before.bytes_out + page());
	cr_assert_eq(after.used, before.used - page());
	free(locs);
	close(fd);
}

Test(cpu_access, pread_of_one_private_page_brings_back_it_and_at_most_its_readahead_window)
{
	int *locs, fd = file_on(PRIV, &locs);
	struct hmm_device_info before = dev_info(fd, PRIV), after;
	int *got = new_locs(64, HOLE);
	long long back;

	expect_pattern(fd, 10 * page(), page(), 21);
	read_locs(fd, got, 65);
	cr_assert_eq(got[10], HOST, "the page read is still on %s", loc_name(got[10]));
	for (long long i = 0; i < 10; i++)
		cr_assert_eq(got[i], PRIV, "page %lld before the one read came back", i);
	/* What came back is one run from page 10 on: the kernel's READ. */
	back = count_locs(got, 64, HOST);
	for (long long i = 10; i < 10 + back; i++)
		cr_assert_eq(got[i], HOST, "pages brought back are not one run from page 10");
	cr_assert_leq(back * page(), 1 * MiB, "more than one READ's worth came back");
	after = dev_info(fd, PRIV);
	cr_assert_eq(after.cpu_faults - before.cpu_faults, (uint64_t)back,
		     "cpu_faults counts %llu pages, %lld came back",
		     (unsigned long long)(after.cpu_faults - before.cpu_faults), back);
	cr_assert_eq(after.used, before.used - back * page());
	free(got);
	free(locs);
	close(fd);
}

static void expect_mapped_load_brings_back(bool random)
{
	int *locs, fd = file_on(PRIV, &locs);
	struct hmm_device_info before = dev_info(fd, PRIV), after;
	int *got = new_locs(64, HOLE);
	unsigned char *map, want;
	long long back;

	map = mmap(NULL, 64 * page(), PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	if (random)
		cr_assert_eq(madvise(map, 64 * page(), MADV_RANDOM), 0);
	pattern_fill(&want, 1, 20 * page() + 123, 21);
	cr_assert_eq(map[20 * page() + 123], want, "the loaded byte is wrong");
	read_locs(fd, got, 65);
	cr_assert_eq(got[20], HOST, "the page loaded is still on %s", loc_name(got[20]));
	back = count_locs(got, 64, HOST);
	if (random)
		cr_assert_eq(back, 1, "with MADV_RANDOM %lld pages came back", back);
	after = dev_info(fd, PRIV);
	cr_assert_eq(after.cpu_faults - before.cpu_faults, (uint64_t)back);
	cr_assert_eq(after.used, before.used - back * page());
	/* The rest of the mapping reads right too (and comes back). */
	for (long long i = 0; i < 64; i++) {
		pattern_fill(&want, 1, i * page() + i, 21);
		cr_assert_eq(map[i * page() + i], want, "page %lld read through the mapping", i);
	}
	read_locs(fd, got, 65);
	cr_assert_eq(count_locs(got, 64, HOST), 64, "every page loaded is in host RAM");
	cr_assert_eq(dev_used_pages(fd, PRIV), 0);
	munmap(map, 64 * page());
	free(got);
	free(locs);
	close(fd);
}

Test(cpu_access, mmap_load_of_a_private_page_brings_it_back)
{
	expect_mapped_load_brings_back(false);
}

Test(cpu_access, mmap_load_of_a_private_page_with_random_advice_brings_back_only_that_page)
{
	expect_mapped_load_brings_back(true);
}

Test(cpu_access, write_to_part_of_a_private_page_brings_it_back_with_the_written_data)
{
	int *locs, fd = file_on(PRIV, &locs);
	struct hmm_device_info before = dev_info(fd, PRIV), after;
	unsigned char *want = malloc(64 * page());

	pattern_fill(want, 64 * page(), 0, 21);
	pattern_fill(want + 30 * page() + 10, 100, 30 * page() + 10, 22);
	write_pattern(fd, 30 * page() + 10, 100, 22);
	locs[30] = HOST;
	expect_locs(fd, locs, 64 * page(), "after writing into page 30");
	after = dev_info(fd, PRIV);
	cr_assert_eq(after.cpu_faults, before.cpu_faults + 1);
	cr_assert_eq(after.used, before.used - page());
	/* Page 30 from the daemon: the old bytes around the new ones. */
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
	expect_bytes(fd, 30 * page(), want + 30 * page(), page(), "page 30");
	expect_locs(fd, locs, 64 * page(), "after reading page 30 back");
	expect_bytes(fd, 0, want, 64 * page(), "the whole file");
	free(want);
	free(locs);
	close(fd);
}

Test(cpu_access, write_of_a_whole_private_page_leaves_it_in_host_ram_with_the_new_data)
{
	int *locs, fd = file_on(PRIV, &locs);

	write_pattern(fd, 5 * page(), page(), 23);
	locs[5] = HOST;
	expect_locs(fd, locs, 64 * page(), "after overwriting page 5");
	cr_assert_eq(dev_used_pages(fd, PRIV), 63);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_pattern(fd, 5 * page(), page(), 23);
	expect_pattern(fd, 0, 5 * page(), 21);
	expect_pattern(fd, 6 * page(), 58 * page(), 21);
	free(locs);
	close(fd);
}

Test(cpu_access, copy_file_range_from_private_pages_brings_the_source_pages_back)
{
	int *locs, fd = file_on(PRIV, &locs), out = create_file("g");
	struct hmm_device_info before = dev_info(fd, PRIV);
	loff_t in_off = 40 * page(), out_off = 0;

	cr_assert_eq(copy_file_range(fd, &in_off, out, &out_off, 2 * page(), 0), 2 * page());
	locs[40] = locs[41] = HOST;
	expect_locs(fd, locs, 64 * page(), "after copying pages 40 and 41");
	cr_assert_eq(dev_info(fd, PRIV).cpu_faults, before.cpu_faults + 2);
	cr_assert_eq(posix_fadvise(out, 0, 0, POSIX_FADV_DONTNEED), 0);
	unsigned char *want = malloc(2 * page());
	pattern_fill(want, 2 * page(), 40 * page(), 21);
	expect_bytes(out, 0, want, 2 * page(), "the copy");
	free(want);
	free(locs);
	close(out);
	close(fd);
}

Test(cpu_access, pread_mmap_load_write_and_mmap_store_leave_coherent_pages_on_the_device)
{
	int *locs, fd = file_on(COH, &locs);
	struct hmm_device_info before = dev_info(fd, COH), after;
	unsigned char *map, want;

	/* pread, from the daemon. */
	expect_file_pattern(fd, 64 * page(), 21);
	expect_locs(fd, locs, 64 * page(), "after pread");
	/* A load through a fresh mapping. */
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	map = mmap(NULL, 64 * page(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	pattern_fill(&want, 1, 33 * page() + 7, 21);
	cr_assert_eq(map[33 * page() + 7], want);
	expect_locs(fd, locs, 64 * page(), "after an mmap load");
	/* write(). */
	write_pattern(fd, 12 * page() + 100, 2 * page(), 24);
	expect_locs(fd, locs, 64 * page(), "after write()");
	/* An mmap store, written back. */
	map[50 * page() + 1] = 0xee;
	cr_assert_eq(msync(map, 64 * page(), MS_SYNC), 0);
	expect_locs(fd, locs, 64 * page(), "after an mmap store and msync");
	munmap(map, 64 * page());

	after = dev_info(fd, COH);
	cr_assert_eq(after.cpu_faults, before.cpu_faults, "the CPU reached coherent memory in place");
	cr_assert_eq(after.used, 64 * page());
	cr_assert_eq(after.pages_out, before.pages_out);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_pattern(fd, 0, 12 * page() + 100, 21);
	expect_pattern(fd, 12 * page() + 100, 2 * page(), 24);
	expect_pattern(fd, 14 * page() + 100, 36 * page() - 100 + 1, 21);
	unsigned char c = 0;
	cr_assert_eq(pread(fd, &c, 1, 50 * page() + 1), 1);
	cr_assert_eq(c, 0xee);
	expect_pattern(fd, 50 * page() + 2, 14 * page() - 2, 21);
	expect_locs(fd, locs, 64 * page(), "after reading everything back");
	free(locs);
	close(fd);
}

/* ---------------------------------------------------------------- mmap stores */

struct store_case {
	int from, to;
	char what[32];
};

ParameterizedTestParameters(migrate, mmap_stores_made_just_before_a_migration_survive_it)
{
	static struct store_case cases[] = {
		{ HOST, PRIV, "host to private" },
		{ HOST, COH, "host to coherent" },
		{ COH, PRIV2, "coherent to private" },
		{ PRIV, COH, "private to coherent" },
		{ COH, HOST, "coherent to host" },
	};
	return cr_make_param_array(struct store_case, cases, sizeof(cases) / sizeof(cases[0]));
}

#define STORE_PAGES 16

/* The stores: one byte in every page, and all of page 5. */
static void do_stores(unsigned char *map, unsigned char *want, unsigned round)
{
	for (long long i = 0; i < STORE_PAGES; i++) {
		map[i * page() + i] = (unsigned char)(0xa0 + i + round);
		want[i * page() + i] = (unsigned char)(0xa0 + i + round);
	}
	pattern_fill(want + 5 * page(), page(), 5 * page(), 30 + round);
	memcpy(map + 5 * page(), want + 5 * page(), page());
}

ParameterizedTest(struct store_case *c, migrate, mmap_stores_made_just_before_a_migration_survive_it)
{
	long long size = STORE_PAGES * page();
	int fd = pattern_file("f", size, 25), *locs = new_locs(STORE_PAGES, HOST);
	unsigned char *want = malloc(size), *map;

	cr_log_info("%s", c->what);
	pattern_fill(want, size, 0, 25);
	if (c->from != HOST)
		hop(fd, locs, size, 0, -1, c->from);
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	do_stores(map, want, 0);
	/* No msync: taking the pages from the CPU must write them back. */
	migrate_ok(fd, 0, 0, c->to, -1, -1);
	for (long long i = 0; i < STORE_PAGES; i++)
		locs[i] = c->to;
	expect_locs(fd, locs, size, "right after the migration");
	munmap(map, size);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_bytes(fd, 0, want, size, "after the migration");
	free(want);
	free(locs);
	close(fd);
}

static int wait_byte(int rfd)
{
	char c;

	return read(rfd, &c, 1) == 1 ? 0 : -1;
}

static void send_byte(int wfd)
{
	cr_assert_eq(write(wfd, "x", 1), 1);
}

/*
 * The child maps the file, stores, tells the parent, waits for the
 * migration, then checks its mapping and stores again.  Exit: 0, or the
 * number of the step that failed.
 */
static int storing_child(const char *path, int to_parent, int from_parent)
{
	long long size = STORE_PAGES * page();
	unsigned char *want = malloc(size), *map;
	int fd = open(path, O_RDWR);

	if (fd < 0 || !want)
		return 1;
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return 2;
	pattern_fill(want, size, 0, 25);
	for (long long i = 0; i < STORE_PAGES; i++)
		map[i * page() + i] = want[i * page() + i] = (unsigned char)(0xa0 + i);
	pattern_fill(want + 5 * page(), page(), 5 * page(), 30);
	memcpy(map + 5 * page(), want + 5 * page(), page());
	if (write(to_parent, "s", 1) != 1)
		return 3;
	if (wait_byte(from_parent))
		return 4;
	/* After the migration, the mapping shows the same bytes. */
	if (memcmp(map, want, size) != 0)
		return 5;
	/* A second round of stores, written back only at the next migration. */
	for (long long i = 0; i < STORE_PAGES; i++)
		map[i * page() + i + 1] = (unsigned char)(0x10 + i);
	if (write(to_parent, "t", 1) != 1)
		return 6;
	if (wait_byte(from_parent))
		return 7;
	munmap(map, size);
	close(fd);
	return 0;
}

/* Stores over holes live only in the page cache until written back; they
 * must move like any data, not be skipped as holes. */
Test(migrate, mmap_stores_over_holes_not_yet_written_back_move_with_the_migration)
{
	long long size = 8 * page();
	int fd = create_file("holes"), *locs = new_locs(8, PRIV);
	unsigned char *p, *want = malloc(size);
	struct hmm_migrate m;

	cr_assert_eq(ftruncate(fd, size), 0);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	pattern_fill(want, size, 0, 61);
	memcpy(p, want, size); /* no msync: dirty in the page cache only */
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, PRIV, &m), 0);
	cr_assert_eq(m.moved, 8, "moved %llu of 8 pages", (unsigned long long)m.moved);
	expect_locs(fd, locs, size, "after migrating stores over holes");
	munmap(p, size);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_bytes(fd, 0, want, size, "the stores, from the device");
	free(want);
	free(locs);
	close(fd);
}

Test(migrate, mmap_stores_of_another_process_made_just_before_a_migration_survive_it)
{
	long long size = STORE_PAGES * page();
	int fd = pattern_file("f", size, 25), *locs = new_locs(STORE_PAGES, HOST);
	int up[2], down[2], status;
	unsigned char *want = malloc(size);
	pid_t pid;

	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(down), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		_exit(storing_child(mp("f"), up[1], down[0]));
	}
	close(up[1]);
	close(down[0]);
	cr_assert_eq(wait_byte(up[0]), 0, "the child did not store");
	hop(fd, locs, size, 0, -1, PRIV);
	pattern_fill(want, size, 0, 25);
	for (long long i = 0; i < STORE_PAGES; i++)
		want[i * page() + i] = (unsigned char)(0xa0 + i);
	pattern_fill(want + 5 * page(), page(), 5 * page(), 30);
	send_byte(down[1]);
	cr_assert_eq(wait_byte(up[0]), 0, "the child failed after the first migration");
	/* The child's loads faulted pages back; move everything to the coherent device. */
	migrate_ok(fd, 0, 0, COH, STORE_PAGES, 0);
	for (long long i = 0; i < STORE_PAGES; i++)
		want[i * page() + i + 1] = (unsigned char)(0x10 + i);
	send_byte(down[1]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child failed at step %d (status %#x)", WEXITSTATUS(status), status);
	set_locs(locs, 0, STORE_PAGES, COH);
	expect_locs(fd, locs, size, "after the second migration");
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_bytes(fd, 0, want, size, "after both migrations");
	free(want);
	free(locs);
	close(up[0]);
	close(down[1]);
	close(fd);
}

/* ---------------------------------------------------------------- holes */

ParameterizedTestParameters(migrate, holes_stay_holes_and_use_no_device_memory)
{
	static int devs[] = { PRIV, COH };
	return cr_make_param_array(int, devs, 2);
}

ParameterizedTest(int *dev, migrate, holes_stay_holes_and_use_no_device_memory)
{
	long long n = 30, size = n * page() + 7;
	int fd = create_file("f"), *locs = new_locs(n + 1, HOLE);
	long long data[] = { 0, 5, 6, 20 };
	blkcnt_t blocks;

	cr_assert_eq(ftruncate(fd, size), 0);
	for (int i = 0; i < 4; i++) {
		write_pattern(fd, data[i] * page() + 3, page() - 3, 40 + i);
		locs[data[i]] = HOST;
	}
	blocks = fd_stat(fd).st_blocks;
	cr_assert_eq(blocks, 4 * page() / 512);
	expect_locs(fd, locs, size, "a sparse file");
	hop(fd, locs, size, 0, -1, *dev);
	cr_assert_eq(dev_info(fd, *dev).used, 4 * page(), "only data pages use device memory");
	cr_assert_eq(dev_info(fd, *dev).pages_in, 4);
	/* A range of holes only: nothing moved, nothing skipped. */
	migrate_ok(fd, 7 * page(), 13 * page(), *dev == PRIV ? COH : PRIV, 0, 0);
	cr_assert_eq(fd_stat(fd).st_blocks, blocks, "st_blocks counts pages wherever they are");
	expect_seek(fd, 0, SEEK_HOLE, page());
	expect_seek(fd, page(), SEEK_DATA, 5 * page());
	expect_seek(fd, 5 * page(), SEEK_HOLE, 7 * page());
	expect_seek(fd, 7 * page(), SEEK_DATA, 20 * page());
	expect_seek(fd, 21 * page(), SEEK_DATA, -1);
	hop(fd, locs, size, 0, -1, HOST);
	cr_assert_eq(dev_info(fd, *dev).used, 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	for (int i = 0; i < 4; i++) {
		expect_zeros(fd, data[i] * page(), 3, "the start of a data page");
		expect_pattern(fd, data[i] * page() + 3, page() - 3, 40 + i);
	}
	expect_zeros(fd, page(), 4 * page(), "a hole");
	expect_zeros(fd, 21 * page(), 9 * page() + 7, "the hole at the end");
	cr_assert_eq(fd_stat(fd).st_blocks, blocks);
	free(locs);
	close(fd);
}

/* ---------------------------------------------------------------- truncate and punch */

ParameterizedTestParameters(migrate, truncate_over_device_pages_frees_them_and_regrown_pages_read_zero)
{
	static int devs[] = { PRIV, COH };
	return cr_make_param_array(int, devs, 2);
}

ParameterizedTest(int *dev, migrate,
		  truncate_over_device_pages_frees_them_and_regrown_pages_read_zero)
{
	long long size = 16 * page();
	int fd = pattern_file("f", size, 50), *locs = new_locs(16, HOST);
	bool priv = *dev == PRIV;
	struct hmm_device_info before;

	hop(fd, locs, size, 0, -1, *dev);
	before = dev_info(fd, *dev);
	cr_assert_eq(before.used, 16 * page());
	/* A size inside page 5: a private page comes back for the CPU to zero its tail. */
	cr_assert_eq(ftruncate(fd, 5 * page() + 100), 0);
	set_locs(locs, 6, 16, HOLE);
	if (priv)
		locs[5] = HOST;
	expect_locs(fd, locs, 5 * page() + 100, "after truncating into page 5");
	cr_assert_eq(dev_info(fd, *dev).used, (priv ? 5 : 6) * page());
	cr_assert_eq(dev_info(fd, *dev).cpu_faults, before.cpu_faults + (priv ? 1 : 0));
	/* At a page boundary nothing needs the CPU. */
	cr_assert_eq(ftruncate(fd, 3 * page()), 0);
	set_locs(locs, 3, 16, HOLE);
	expect_locs(fd, locs, 3 * page(), "after truncating to 3 pages");
	cr_assert_eq(dev_info(fd, *dev).used, 3 * page());
	/* Grow again: the regrown part is a hole and reads zero. */
	cr_assert_eq(ftruncate(fd, size), 0);
	expect_locs(fd, locs, size, "after growing back");
	cr_assert_eq(dev_info(fd, *dev).used, 3 * page());
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_pattern(fd, 0, 3 * page(), 50);
	expect_zeros(fd, 3 * page(), 13 * page(), "the regrown part");
	cr_assert_eq(ftruncate(fd, 0), 0);
	cr_assert_eq(dev_info(fd, *dev).used, 0);
	free(locs);
	close(fd);
}

ParameterizedTestParameters(migrate, punching_device_pages_frees_them_and_they_read_zero)
{
	static int devs[] = { PRIV, COH };
	return cr_make_param_array(int, devs, 2);
}

ParameterizedTest(int *dev, migrate, punching_device_pages_frees_them_and_they_read_zero)
{
	long long size = 16 * page();
	int fd = pattern_file("f", size, 51), *locs = new_locs(16, HOST);
	bool priv = *dev == PRIV;
	unsigned char *want = malloc(size);

	pattern_fill(want, size, 0, 51);
	hop(fd, locs, size, 0, -1, *dev);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * page(),
			       3 * page()), 0);
	memset(want + 2 * page(), 0, 3 * page());
	set_locs(locs, 2, 5, HOLE);
	expect_locs(fd, locs, size, "after punching pages 2 to 4");
	cr_assert_eq(dev_info(fd, *dev).used, 13 * page());
	/* Inside one page: it is zeroed in place (coherent) or back in host RAM (private). */
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 7 * page() + 10,
			       10), 0);
	memset(want + 7 * page() + 10, 0, 10);
	if (priv)
		locs[7] = HOST;
	expect_locs(fd, locs, size, "after punching inside page 7");
	cr_assert_eq(dev_info(fd, *dev).used, (priv ? 12 : 13) * page());
	/* Across page boundaries: whole pages freed, partial ones zeroed. */
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 9 * page() + 1,
			       3 * page()), 0);
	memset(want + 9 * page() + 1, 0, 3 * page());
	set_locs(locs, 10, 12, HOLE);
	if (priv)
		locs[9] = locs[12] = HOST;
	expect_locs(fd, locs, size, "after punching from inside page 9 to inside page 12");
	cr_assert_eq(dev_info(fd, *dev).used, (priv ? 8 : 11) * page());
	cr_assert_eq(fd_stat(fd).st_blocks, 11 * page() / 512);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_bytes(fd, 0, want, size, "after punching");
	if (priv) /* reading brought every private page back */
		for (int i = 0; i < 16; i++)
			if (locs[i] == PRIV)
				locs[i] = HOST;
	/* Refill a punched page: a new page in host RAM. */
	write_pattern(fd, 3 * page(), page(), 52);
	locs[3] = HOST;
	expect_locs(fd, locs, size, "after refilling page 3");
	free(want);
	free(locs);
	close(fd);
}

/* Poll: RELEASE reaches the daemon a moment after close(2) returns. */
static void expect_used_soon(int dirfd, unsigned dev, uint64_t pages, const char *what)
{
	struct timespec tick = { 0, 1000000 };

	for (int i = 0; i < 5000; i++) {
		if (dev_used_pages(dirfd, dev) == pages)
			return;
		nanosleep(&tick, NULL);
	}
	cr_assert_eq(dev_used_pages(dirfd, dev), pages, "%s", what);
}

Test(migrate, unlinking_a_file_frees_its_device_pages_at_the_last_close)
{
	int dir = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	int a = pattern_file("a", 6 * page(), 53), b = pattern_file("b", 4 * page(), 54);

	cr_assert_geq(dir, 0);
	migrate_ok(a, 0, 0, PRIV, 6, 0);
	migrate_ok(b, 0, 0, COH, 4, 0);
	close(b);
	cr_assert_eq(unlink(mp("a")), 0);
	cr_assert_eq(unlink(mp("b")), 0);
	expect_used_soon(dir, COH, 0, "a closed file's device pages are freed at unlink");
	cr_assert_eq(dev_used_pages(dir, PRIV), 6, "an open file keeps its device pages");
	migrate_ok(a, 0, 0, PRIV2, 6, 0);
	cr_assert_eq(dev_used_pages(dir, PRIV), 0);
	expect_pattern(a, 0, 6 * page(), 53);
	migrate_ok(a, 0, 0, COH, 6, 0);
	close(a);
	expect_used_soon(dir, COH, 0, "the last close frees the device pages");
	close(dir);
}

/* ---------------------------------------------------------------- ENOSPC */

/* Pages of one 64 KiB device. */
static long long dev_pages(int fd)
{
	return (long long)(dev_info(fd, 0).capacity / (uint64_t)page());
}

static void expect_enospc(int fd, long long off, long long len, int dest)
{
	struct hmm_migrate m;

	errno = 0;
	cr_assert_eq(migrate_raw(fd, off, len, dest, 0, &m), -1,
		     "migrating [%lld, +%lld) to %s succeeded (moved %llu)", off, len,
		     loc_name(dest), (unsigned long long)m.moved);
	cr_assert_eq(errno, ENOSPC, "migrate to %s: expected ENOSPC, got %s", loc_name(dest),
		     strerrorname_np(errno));
	cr_assert_eq(hmm_file_migrate(fd, off, len, dest, NULL), -ENOSPC);
}

/*
 * A range larger than the device: ENOSPC, whatever the eviction policy, and
 * nothing moves.  Once part of the file fills the device, one more page
 * fails with evict=none and, with evict=lru, evicts one of the file's own
 * pages outside the range.
 */
static void file_larger_than_the_device_fails_with_enospc(bool lru)
{
	int dir = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	long long cap, size;
	int fd, *locs, *got;

	cr_assert_geq(dir, 0);
	cap = dev_pages(dir);
	cr_assert_eq(cap, 64 * 1024 / page());
	size = (cap + 4) * page() + 1;
	fd = pattern_file("f", size, 60);
	locs = new_locs(cap + 5, HOST);
	got = new_locs(cap + 5, HOLE);
	for (int dev = 0; dev < 2; dev++) {
		expect_enospc(fd, 0, 0, dev);
		expect_locs(fd, locs, size, "after ENOSPC");
		cr_assert_eq(dev_info(dir, dev).used, 0, "device %d: nothing moved", dev);
		cr_assert_eq(dev_info(dir, dev).pages_in, 0);
		/* The part that fits moves. */
		hop(fd, locs, size, 0, cap, dev);
		cr_assert_eq(dev_info(dir, dev).used, dev_info(dir, dev).capacity);
		/* The whole file still cannot fit: nothing of it may be evicted for itself. */
		expect_enospc(fd, 0, 0, dev);
		expect_locs(fd, locs, size, "after ENOSPC on a full device");
		cr_assert_eq(dev_info(dir, dev).evictions, 0);
		if (!lru) {
			expect_enospc(fd, cap * page(), page(), dev);
			expect_locs(fd, locs, size, "after ENOSPC for one more page");
		} else {
			migrate_ok(fd, cap * page(), page(), dev, 1, 0);
			cr_assert_eq(dev_info(dir, dev).evictions, 1);
			cr_assert_eq(dev_info(dir, dev).used, dev_info(dir, dev).capacity);
			read_locs(fd, got, cap + 5);
			cr_assert_eq(got[cap], dev, "the page migrated is on %s", loc_name(got[cap]));
			cr_assert_eq(count_locs(got, cap, HOST), 1, "one older page was evicted");
			cr_assert_eq(count_locs(got, cap, dev), cap - 1);
			memcpy(locs, got, (cap + 5) * sizeof(*locs));
		}
		hop(fd, locs, size, 0, -1, HOST);
	}
	expect_file_pattern(fd, size, 60);
	free(got);
	free(locs);
	close(fd);
	close(dir);
}

Test(evict_none, a_file_larger_than_the_device_fails_with_enospc_and_moves_nothing)
{
	file_larger_than_the_device_fails_with_enospc(false);
	expect_daemon_serves();
}

Test(evict_lru, a_file_larger_than_the_device_fails_with_enospc_and_moves_nothing)
{
	file_larger_than_the_device_fails_with_enospc(true);
	expect_daemon_serves();
}

Test(evict_none, a_device_full_of_another_files_pages_fails_with_enospc_and_moves_nothing)
{
	int dir = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	long long cap = dev_pages(dir), half = cap / 2;
	int a = pattern_file("a", (cap - half + 1) * page(), 61);
	int b = pattern_file("b", half * page(), 62);
	int *la = new_locs(cap, HOST), *lb = new_locs(half, HOST);

	hop(a, la, (cap - half + 1) * page(), 0, -1, PRIV);
	/* half pages of b, half - 1 free. */
	expect_enospc(b, 0, 0, PRIV);
	expect_locs(b, lb, half * page(), "b after ENOSPC");
	expect_locs(a, la, (cap - half + 1) * page(), "a after ENOSPC");
	cr_assert_eq(dev_info(dir, PRIV).used, (cap - half + 1) * page());
	cr_assert_eq(dev_info(dir, PRIV).evictions, 0);
	/* One page less fits exactly. */
	hop(b, lb, half * page(), 1, -1, PRIV);
	cr_assert_eq(dev_info(dir, PRIV).used, dev_info(dir, PRIV).capacity);
	expect_file_pattern(a, (cap - half + 1) * page(), 61);
	expect_file_pattern(b, half * page(), 62);
	free(la);
	free(lb);
	close(a);
	close(b);
	close(dir);
	expect_daemon_serves();
}

Test(evict_none, only_pages_not_yet_on_the_device_and_not_holes_need_room)
{
	int dir = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	long long cap = dev_pages(dir);
	/* A file of 2 * cap pages, of which cap are data: it fits. */
	long long size = 2 * cap * page();
	int fd = create_file("f"), *locs = new_locs(2 * cap, HOLE);

	cr_assert_eq(ftruncate(fd, size), 0);
	for (long long i = 0; i < 2 * cap; i += 2) {
		write_pattern(fd, i * page(), page(), 63);
		locs[i] = HOST;
	}
	hop(fd, locs, size, 0, 4, PRIV);
	hop(fd, locs, size, 0, -1, PRIV);
	cr_assert_eq(dev_info(dir, PRIV).used, dev_info(dir, PRIV).capacity);
	/* Full: pages already there are skipped, so this succeeds. */
	hop(fd, locs, size, 0, -1, PRIV);
	free(locs);
	close(fd);
	close(dir);
}

/*
 * With evict=lru, a migration to a full device moves that device's least
 * recently used pages back to host RAM to make room (issue 3, item 5).
 */
Test(evict_lru, a_migration_to_a_full_device_evicts_its_least_recently_used_pages)
{
	int dir = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	long long cap = dev_pages(dir), na = cap - cap / 4, nb = cap / 2;
	int a = pattern_file("a", na * page(), 64), b = pattern_file("b", nb * page(), 65);
	int *la = new_locs(na, HOST), *lb = new_locs(nb, HOST), *got = new_locs(na, HOLE);
	long long evicted = na + nb - cap;
	struct hmm_device_info info;

	hop(a, la, na * page(), 0, -1, PRIV);
	hop(b, lb, nb * page(), 0, -1, PRIV);
	info = dev_info(dir, PRIV);
	cr_assert_eq(info.used, info.capacity);
	cr_assert_eq(info.evictions, (uint64_t)evicted);
	cr_assert_eq(info.pages_out, (uint64_t)evicted, "evictions count as pages out");
	cr_assert_eq(info.cpu_faults, 0, "an eviction is not a CPU fault");
	/* a's pages were the least recently used: some of them went to host RAM. */
	read_locs(a, got, na + 1);
	cr_assert_eq(count_locs(got, na, HOST), evicted);
	cr_assert_eq(count_locs(got, na, PRIV), na - evicted);
	expect_file_pattern(a, na * page(), 64);
	expect_file_pattern(b, nb * page(), 65);
	free(got);
	free(la);
	free(lb);
	close(a);
	close(b);
	close(dir);
}

Test(host_full, cpu_access_to_a_private_page_when_host_ram_is_full_fails_with_enospc)
{
	long long n = 64 * 1024 / page(), size = n * page();
	int a = pattern_file("a", size, 66), b, *locs = new_locs(n, HOST);
	unsigned char c = 1;

	hop(a, locs, size, 0, -1, PRIV);
	b = pattern_file("b", size, 67); /* host RAM is full again */
	cr_assert_eq(posix_fadvise(a, 0, 0, POSIX_FADV_RANDOM), 0);
	assert_fails(pread(a, &c, 1, 3 * page()), ENOSPC);
	assert_fails(pwrite(a, &c, 1, 4 * page()), ENOSPC);
	expect_enospc(a, 0, 0, HOST);
	expect_locs(a, locs, size, "after the failed accesses");
	expect_pattern(b, 0, size, 67);
	/* Once host RAM is freed, the same accesses succeed with the data intact. */
	cr_assert_eq(ftruncate(b, 0), 0);
	expect_pattern(a, 3 * page(), page(), 66);
	c = 0x5c;
	cr_assert_eq(pwrite(a, &c, 1, 4 * page()), 1);
	migrate_ok(a, 0, 0, HOST, n - 2, 2);
	cr_assert_eq(posix_fadvise(a, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_pattern(a, 0, 4 * page(), 66);
	cr_assert_eq(pread(a, &c, 1, 4 * page()), 1);
	cr_assert_eq(c, 0x5c);
	expect_pattern(a, 4 * page() + 1, size - 4 * page() - 1, 66);
	free(locs);
	close(a);
	close(b);
}

/* ---------------------------------------------------------------- bad arguments */

Test(migrate_args, misaligned_offset_or_length_fails_with_einval)
{
	int fd = pattern_file("f", 8 * page(), 70), *locs = new_locs(8, HOST);

	assert_fails(migrate_raw(fd, 1, 0, PRIV, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, page() / 2, page(), PRIV, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, 0, page() + 1, PRIV, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, 0, 1, HOST, 0, NULL), EINVAL);
	cr_assert_eq(hmm_file_migrate(fd, 512, 0, PRIV, NULL), -EINVAL);
	cr_assert_eq(hmm_file_migrate(fd, 0, 100, COH, NULL), -EINVAL);
	expect_locs(fd, locs, 8 * page(), "after EINVAL");
	expect_daemon_serves();
	free(locs);
	close(fd);
}

Test(migrate_args, offset_at_or_past_2_to_the_52_fails_with_einval)
{
	int fd = pattern_file("f", page(), 71);

	assert_fails(migrate_raw(fd, 1ULL << 52, 0, PRIV, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, (1ULL << 52) + page(), page(), PRIV, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, (1ULL << 52) - page(), 2 * page(), PRIV, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, -(uint64_t)page(), 0, PRIV, 0, NULL), EINVAL);
	expect_daemon_serves();
	close(fd);
}

Test(migrate_args, nonzero_flags_fail_with_einval)
{
	int fd = pattern_file("f", 2 * page(), 72), *locs = new_locs(2, HOST);

	assert_fails(migrate_raw(fd, 0, 0, PRIV, 1, NULL), EINVAL);
	assert_fails(migrate_raw(fd, 0, 0, HOST, 0x80000000u, NULL), EINVAL);
	expect_locs(fd, locs, 2 * page(), "after EINVAL");
	expect_daemon_serves();
	free(locs);
	close(fd);
}

Test(migrate_args, unknown_devices_fail_with_enodev)
{
	int fd = pattern_file("f", 2 * page(), 73), *locs = new_locs(2, HOST);

	assert_fails(migrate_raw(fd, 0, 0, 3, 0, NULL), ENODEV);
	assert_fails(migrate_raw(fd, 0, 0, 99, 0, NULL), ENODEV);
	assert_fails(migrate_raw(fd, 0, 0, -5, 0, NULL), ENODEV);
	assert_fails(migrate_raw(fd, 0, 0, HOLE, 0, NULL), ENODEV);
	assert_fails(migrate_raw(fd, 0, 0, INT32_MIN, 0, NULL), ENODEV);
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, 99, NULL), -ENODEV);
	/* The library refuses a destination below HMM_LOC_HOST before asking. */
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, -5, NULL), -EINVAL);
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, HOLE, NULL), -EINVAL);
	expect_locs(fd, locs, 2 * page(), "after ENODEV");
	expect_daemon_serves();
	free(locs);
	close(fd);
}

Test(migrate_args, device_info_of_an_unknown_device_fails_with_enodev)
{
	int fd = pattern_file("f", 1, 74);
	struct hmm_device_info info;

	cr_assert_eq(hmm_device_info(fd, 99, &info), -ENODEV);
	cr_assert_eq(hmm_device_info(fd, 3, &info), -ENODEV);
	memset(&info, 0, sizeof(info));
	info.index = 99;
	assert_fails(ioctl(fd, HMM_IOC_DEVICE_INFO, &info), ENODEV);
	expect_daemon_serves();
	close(fd);
}

Test(migrate_args, residency_at_a_misaligned_offset_fails_with_einval)
{
	int fd = pattern_file("f", 3 * page(), 75);
	struct hmm_residency *r = malloc(sizeof(*r));

	cr_assert_eq(hmm_file_residency(fd, 1, r), -EINVAL);
	cr_assert_eq(hmm_file_residency(fd, page() + 8, r), -EINVAL);
	memset(r, 0, sizeof(*r));
	r->offset = page() - 1;
	assert_fails(ioctl(fd, HMM_IOC_RESIDENCY, r), EINVAL);
	expect_daemon_serves();
	free(r);
	close(fd);
}

Test(migrate_args, migrate_and_residency_on_a_directory_fail_with_enotty)
{
	int dir;
	struct hmm_residency *r = malloc(sizeof(*r));
	struct hmm_device_info info;

	cr_assert_eq(mkdir(mp("d"), 0755), 0);
	dir = open(mp("d"), O_RDONLY | O_DIRECTORY);
	cr_assert_geq(dir, 0);
	assert_fails(migrate_raw(dir, 0, 0, PRIV, 0, NULL), ENOTTY);
	cr_assert_eq(hmm_file_migrate(dir, 0, 0, PRIV, NULL), -ENOTTY);
	cr_assert_eq(hmm_file_residency(dir, 0, r), -ENOTTY);
	/* Device information is available from a directory. */
	cr_assert_eq(hmm_device_info(dir, COH, &info), 0);
	cr_assert_eq(info.ndevices, 3);
	cr_assert_eq(info.type, HMM_DEVICE_COHERENT);
	expect_daemon_serves();
	free(r);
	close(dir);
}

static void expect_not_hmmfs(int fd, const char *what)
{
	struct hmm_residency *r = malloc(sizeof(*r));
	struct hmm_device_info info;

	errno = 0;
	cr_assert_eq(migrate_raw(fd, 0, 0, PRIV, 0, NULL), -1, "%s: migrate succeeded", what);
	cr_assert_eq(errno, ENOTTY, "%s: migrate: %s", what, strerrorname_np(errno));
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, HOST, NULL), -ENOTTY, "%s", what);
	cr_assert_eq(hmm_file_residency(fd, 0, r), -ENOTTY, "%s", what);
	cr_assert_eq(hmm_device_info(fd, 0, &info), -ENOTTY, "%s", what);
	free(r);
}

Test(migrate_args, the_ioctls_on_a_tmpfs_file_and_on_dev_null_fail_with_enotty)
{
	char dir[] = "/tmp/hmmfs-tmpfs.XXXXXX", path[64];
	int fd;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(mount("none", dir, "tmpfs", 0, "size=1M"), 0, "mount tmpfs: %s",
		     strerror(errno));
	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "data", 4), 4);
	expect_not_hmmfs(fd, "a tmpfs file");
	close(fd);
	umount2(dir, MNT_DETACH);
	rmdir(dir);

	fd = open("/dev/null", O_RDWR);
	cr_assert_geq(fd, 0);
	expect_not_hmmfs(fd, "/dev/null");
	close(fd);
	expect_daemon_serves();
}

Test(migrate_args, an_unknown_ioctl_on_an_hmmfs_file_fails_with_enotty)
{
	int fd = pattern_file("f", page(), 76);
	struct hmm_migrate m = { 0 };
	int flags;

	assert_fails(ioctl(fd, _IOWR(HMM_IOC_MAGIC, 0x7f, struct hmm_migrate), &m), ENOTTY);
	assert_fails(ioctl(fd, _IOR(HMM_IOC_MAGIC, 0x40, struct hmm_migrate), &m), ENOTTY);
	assert_fails(ioctl(fd, _IOWR(HMM_IOC_MAGIC, 0x40, uint64_t), &m), ENOTTY);
	assert_fails(ioctl(fd, FS_IOC_GETFLAGS, &flags), ENOTTY);
	expect_daemon_serves();
	close(fd);
}

Test(migrate_args, a_closed_descriptor_fails_with_ebadf)
{
	int fd = pattern_file("f", page(), 77);
	struct hmm_residency *r = malloc(sizeof(*r));
	struct hmm_device_info info;

	close(fd);
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, PRIV, NULL), -EBADF);
	cr_assert_eq(hmm_file_residency(fd, 0, r), -EBADF);
	cr_assert_eq(hmm_device_info(fd, 0, &info), -EBADF);
	free(r);
	expect_daemon_serves();
}

Test(no_devices, migrating_to_a_device_fails_with_enodev_and_to_host_skips_every_page)
{
	int fd = pattern_file("f", 3 * page() + 1, 78), *locs = new_locs(4, HOST);
	struct hmm_device_info info;

	assert_fails(migrate_raw(fd, 0, 0, 0, 0, NULL), ENODEV);
	cr_assert_eq(hmm_device_info(fd, 0, &info), -ENODEV);
	migrate_ok(fd, 0, 0, HOST, 0, 4);
	expect_locs(fd, locs, 3 * page() + 1, "without devices");
	expect_file_pattern(fd, 3 * page() + 1, 78);
	free(locs);
	close(fd);
}

/* ---------------------------------------------------------------- big pages */

Test(migrate_bigpage, migration_and_residency_work_in_64k_pages)
{
	long long size = 3 * BIG_PAGE + 100;
	int fd = pattern_file("f", size, 79);
	struct hmm_residency *r = malloc(sizeof(*r));

	assert_fails(migrate_raw(fd, 4096, 0, 0, 0, NULL), EINVAL);
	assert_fails(migrate_raw(fd, 0, 4096, 0, 0, NULL), EINVAL);
	cr_assert_eq(hmm_file_residency(fd, 4096, r), -EINVAL);
	migrate_ok(fd, BIG_PAGE, BIG_PAGE, 0, 1, 0);
	migrate_ok(fd, 0, 0, 1, 4, 0);
	cr_assert_eq(dev_info(fd, 1).used, 4 * BIG_PAGE);
	cr_assert_eq(dev_info(fd, 1).page_size, BIG_PAGE);
	cr_assert_eq(dev_info(fd, 0).pages_out, 1);
	cr_assert_eq(dev_info(fd, 0).bytes_out, BIG_PAGE);
	cr_assert_eq(hmm_file_residency(fd, 0, r), 0);
	cr_assert_eq(r->page_size, BIG_PAGE);
	cr_assert_eq(r->count, 1);
	cr_assert_eq(r->ranges[0].length, (uint64_t)size);
	cr_assert_eq(r->ranges[0].location, 1);
	migrate_ok(fd, 2 * BIG_PAGE, 0, 0, 2, 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_pattern(fd, 0, size, 79);
	cr_assert_eq(dev_info(fd, 0).used, 0, "reading brought the private pages back");
	free(r);
	close(fd);
}

/* ---------------------------------------------------------------- counters */

/* The DMA engines need at least this long to move bytes at COUNTERS_BW. */
static uint64_t min_dma_ns(long long bytes)
{
	return (uint64_t)((double)bytes * 1e9 / (double)COUNTERS_BW);
}

Test(device_counters, a_scripted_sequence_moves_every_counter_as_expected)
{
	long long ps = page(), size = 10 * ps;
	int fd = pattern_file("f", size, 80);
	struct hmm_device_info p0, c0, p, c;

	p0 = dev_info(fd, PRIV);
	c0 = dev_info(fd, COH);
	cr_assert_eq(p0.ndevices, 2);
	cr_assert_eq(p0.type, HMM_DEVICE_PRIVATE);
	cr_assert_eq(c0.type, HMM_DEVICE_COHERENT);
	cr_assert_eq(p0.page_size, (uint32_t)ps);
	cr_assert_eq(p0.capacity, MiB);
	cr_assert_eq(p0.dma_engines, 1);
	cr_assert_eq(p0.dma_bw, COUNTERS_BW);
	cr_assert_eq(p0.dma_latency_ns, 0);
	cr_assert_eq(p0.used + p0.pages_in + p0.bytes_in + p0.pages_out + p0.bytes_out +
		     p0.cpu_faults + p0.evictions + p0.dma_busy_ns, 0, "a new device is idle");
	cr_assert_eq(c0.used + c0.pages_in + c0.pages_out + c0.dma_busy_ns, 0);

	/* 1. Ten pages to the private device. */
	migrate_ok(fd, 0, 0, PRIV, 10, 0);
	p = dev_info(fd, PRIV);
	cr_assert_eq(p.pages_in, 10);
	cr_assert_eq(p.bytes_in, 10 * ps);
	cr_assert_eq(p.used, 10 * ps);
	cr_assert_eq(p.pages_out, 0);
	cr_assert_geq(p.dma_busy_ns, min_dma_ns(10 * ps), "busy %llu ns for 10 pages",
		      (unsigned long long)p.dma_busy_ns);
	p0 = p;

	/* 2. Four of them to the coherent device: out of one, into the other. */
	migrate_ok(fd, 0, 4 * ps, COH, 4, 0);
	p = dev_info(fd, PRIV);
	c = dev_info(fd, COH);
	cr_assert_eq(p.pages_out, 4);
	cr_assert_eq(p.bytes_out, 4 * ps);
	cr_assert_eq(p.used, 6 * ps);
	cr_assert_eq(p.pages_in, 10);
	cr_assert_eq(c.pages_in, 4);
	cr_assert_eq(c.bytes_in, 4 * ps);
	cr_assert_eq(c.used, 4 * ps);
	cr_assert_eq(c.pages_out, 0);
	cr_assert_geq(p.dma_busy_ns + c.dma_busy_ns, p0.dma_busy_ns + min_dma_ns(4 * ps));
	p0 = p;
	c0 = c;

	/* 3. The CPU reads page 6 (private): one fault, one page out. */
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
	expect_pattern(fd, 6 * ps, ps, 80);
	p = dev_info(fd, PRIV);
	cr_assert_eq(p.cpu_faults, 1);
	cr_assert_eq(p.pages_out, 5);
	cr_assert_eq(p.bytes_out, 5 * ps);
	cr_assert_eq(p.used, 5 * ps);
	cr_assert_geq(p.dma_busy_ns, p0.dma_busy_ns + min_dma_ns(ps));
	p0 = p;

	/* 4. The CPU reads and writes page 1 (coherent): nothing moves. */
	expect_pattern(fd, ps, ps, 80);
	write_pattern(fd, ps + 5, 10, 81);
	c = dev_info(fd, COH);
	cr_assert_eq(c.cpu_faults, 0);
	cr_assert_eq(c.pages_out, 0);
	cr_assert_eq(c.used, 4 * ps);
	cr_assert_eq(c.dma_busy_ns, c0.dma_busy_ns);

	/* 5. Everything home: 5 from the private device, 4 from the coherent one. */
	migrate_ok(fd, 0, 0, HOST, 9, 1);
	p = dev_info(fd, PRIV);
	c = dev_info(fd, COH);
	cr_assert_eq(p.pages_out, 10);
	cr_assert_eq(p.bytes_out, 10 * ps);
	cr_assert_eq(p.used, 0);
	cr_assert_eq(c.pages_out, 4);
	cr_assert_eq(c.bytes_out, 4 * ps);
	cr_assert_eq(c.used, 0);
	cr_assert_geq(p.dma_busy_ns, p0.dma_busy_ns + min_dma_ns(5 * ps));
	cr_assert_geq(c.dma_busy_ns, c0.dma_busy_ns + min_dma_ns(4 * ps));
	p0 = p;
	c0 = c;

	/* 6. Again: nothing to move, nothing counted. */
	migrate_ok(fd, 0, 0, HOST, 0, 10);
	p = dev_info(fd, PRIV);
	c = dev_info(fd, COH);
	cr_assert_eq(memcmp(&p, &p0, sizeof(p)), 0, "the private device's counters changed");
	cr_assert_eq(memcmp(&c, &c0, sizeof(c)), 0, "the coherent device's counters changed");
	cr_assert_eq(p.evictions + c.evictions, 0);
	cr_assert_eq(p.cpu_faults, 1);
	cr_assert_eq(p.pages_in, 10);
	cr_assert_eq(c.pages_in, 4);
	close(fd);
}

/* ---------------------------------------------------------------- races */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
}

/* Where the page holding off lives, for a mismatch report. */
static int page_location(int fd, long long off)
{
	struct hmm_residency *r = malloc(sizeof(*r));
	int loc = -100;

	if (r && hmm_file_residency(fd, (uint64_t)(off / page() * page()), r) == 0 && r->count)
		loc = r->ranges[0].location;
	free(r);
	return loc;
}

/* -- a writer against migrations in both directions */

#define WR_PAGES 64
#define WR_MIGRATIONS 50

struct writer {
	int fd;
	unsigned char *model;
	unsigned char *buf;
	pthread_barrier_t start;
	bool stop;
	long writes;
	struct report report;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	long long size = WR_PAGES * page();
	uint64_t s = 0x1234567;
	unsigned seed = 1000;

	pthread_barrier_wait(&w->start);
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		long long off = (long long)rnd_below(&s, size);
		long long len = 1 + (long long)rnd_below(&s, 3 * page());
		ssize_t n;

		if (len > size - off)
			len = size - off;
		pattern_fill(w->buf, len, off, ++seed);
		n = pwrite(w->fd, w->buf, len, off);
		if (n != len) {
			report_fail(&w->report, "pwrite %lld at %lld returned %zd (%s)", len, off,
				    n, n < 0 ? strerror(errno) : "short");
			break;
		}
		memcpy(w->model + off, w->buf, len);
		/* The write must read back at once, whatever moves meanwhile. */
		n = pread(w->fd, w->buf, len, off);
		if (n != len) {
			report_fail(&w->report, "pread %lld at %lld returned %zd", len, off, n);
			break;
		}
		for (long long i = 0; i < len; i++) {
			if (w->buf[i] != w->model[off + i]) {
				report_fail(&w->report, "write %ld: byte %lld is 0x%02x right after "
					    "writing 0x%02x (page at %s)", w->writes, off + i,
					    w->buf[i], w->model[off + i],
					    loc_name(page_location(w->fd, off + i)));
				break;
			}
		}
		w->writes++;
	}
	return NULL;
}

Test(migrate_race, a_writer_racing_with_50_migrations_loses_no_write)
{
	static const int dests[] = { PRIV, HOST, COH, HOST, PRIV2, COH, PRIV, PRIV2, HOST, COH };
	long long size = WR_PAGES * page();
	struct writer *w = calloc(1, sizeof(*w));
	pthread_t t;
	uint64_t s = 99;

	w->fd = pattern_file("f", size, 90);
	w->model = malloc(size);
	w->buf = malloc(3 * page());
	pattern_fill(w->model, size, 0, 90);
	pthread_barrier_init(&w->start, NULL, 2);
	cr_assert_eq(pthread_create(&t, NULL, writer_main, w), 0);
	pthread_barrier_wait(&w->start);
	for (int i = 0; i < WR_MIGRATIONS; i++) {
		int dest = dests[i % 10];
		long long first = 0, count = 0;
		struct hmm_migrate m;
		int rc;

		if (i % 3 == 2) {
			first = (long long)rnd_below(&s, WR_PAGES);
			count = 1 + (long long)rnd_below(&s, WR_PAGES - first);
		}
		rc = hmm_file_migrate(w->fd, first * page(), count * page(), dest, &m);
		if (rc) {
			report_fail(&w->report, "migration %d to %s: %s", i, loc_name(dest),
				    strerror(-rc));
			break;
		}
		if (m.moved + m.skipped > (uint64_t)(count ? count : WR_PAGES))
			report_fail(&w->report, "migration %d: moved %llu + skipped %llu > %lld", i,
				    (unsigned long long)m.moved, (unsigned long long)m.skipped,
				    count ? count : WR_PAGES);
	}
	__atomic_store_n(&w->stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	expect_no_failures(&w->report);
	cr_assert_gt(w->writes, 0);
	cr_log_info("%ld writes during %d migrations", w->writes, WR_MIGRATIONS);
	cr_assert_eq(posix_fadvise(w->fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_bytes(w->fd, 0, w->model, size, "after the race");
	migrate_ok(w->fd, 0, 0, PRIV, -1, -1);
	expect_bytes(w->fd, 0, w->model, size, "after the race, from the private device");
	close(w->fd);
	free(w->model);
	free(w->buf);
	free(w);
}

/*
 * -- punching and copying into a page that another thread writes back
 *
 * The kernel writes a range back before FALLOCATE or COPY_FILE_RANGE and
 * drops or zeroes its cached pages after the reply, but lets stores through
 * a mapping dirty the range's pages in between and write them back, old
 * bytes of the range included; and a copy drops the partial pages at its
 * ends whole.  No old byte of the range may come back, and no byte outside
 * it may be lost (hmmfs/fence.c, and copy_in_daemon in hmmfs/file.c).
 * Every round: fill the range with old bytes, then punch it or copy over it
 * while another thread stores one byte into the page and forces write-back
 * with close(2), which flushes without the file's lock; then migrate the
 * page, which drops the page cache, and read it back from the daemon.
 */
#define EDGE_ROUNDS 6000
#define EDGE_OLD 0xd1
#define EDGE_COPIED 0x5a

enum edge_op {
	EDGE_PUNCH_HALF,    /* punch the first half; stores go to the second */
	EDGE_COPY_HALF,     /* copy over the first half; stores go to the second */
	EDGE_COPY_PAGE,     /* copy over the whole page, which the stores hit */
};

struct edge_storer {
	int fd;
	volatile unsigned char *map;
	long long from, len;       /* where the stores go */
	int at, value;             /* the last store */
	int go, done, stop;        /* atomics */
	uint64_t seed;
	long stores;
};

static void *edge_storer_main(void *arg)
{
	struct edge_storer *e = arg;

	while (!__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE)) {
		if (!__atomic_exchange_n(&e->go, 0, __ATOMIC_ACQ_REL)) {
			sched_yield();
			continue;
		}
		usleep((useconds_t)rnd_below(&e->seed, 100));
		e->at = (int)(e->from + (long long)rnd_below(&e->seed, (uint64_t)e->len));
		e->value = 0x10 + (int)(e->stores % 0x40); /* never old, copied or 0 */
		e->map[e->at] = (unsigned char)e->value;
		e->stores++;
		close(dup(e->fd)); /* FLUSH: the dirty page is written back */
		__atomic_store_n(&e->done, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void edge_race(enum edge_op *op)
{
	static const char *names[] = { "punching half", "copying half", "copying the page" };
	struct edge_storer *e = calloc(1, sizeof(*e));
	long long ps = page(), len = *op == EDGE_COPY_PAGE ? ps : ps / 2;
	unsigned char *old = malloc(ps), *want = malloc(ps), *got = malloc(ps);
	int src = create_file("src");
	pthread_t t;

	cr_assert_not_null(e);
	memset(old, EDGE_OLD, ps);
	memset(got, EDGE_COPIED, ps);
	cr_assert_eq(pwrite(src, got, ps, 0), ps);
	memset(want, 0, ps);
	memset(want, *op == EDGE_PUNCH_HALF ? 0 : EDGE_COPIED, len);
	e->fd = create_file("f");
	cr_assert_eq(ftruncate(e->fd, ps), 0);
	e->map = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd, 0);
	cr_assert_neq(e->map, MAP_FAILED);
	e->from = *op == EDGE_COPY_PAGE ? 0 : len;
	e->len = ps - e->from;
	e->seed = 7 + *op;
	cr_assert_eq(pthread_create(&t, NULL, edge_storer_main, e), 0);
	for (int round = 0; round < EDGE_ROUNDS; round++) {
		loff_t in = 0, out = 0;

		cr_assert_eq(pwrite(e->fd, old, len, 0), len);
		__atomic_store_n(&e->done, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&e->go, 1, __ATOMIC_RELEASE);
		if (*op == EDGE_PUNCH_HALF)
			cr_assert_eq(fallocate(e->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
					       len), 0, "punch: %s", strerror(errno));
		else
			cr_assert_eq(copy_file_range(src, &in, e->fd, &out, len, 0), len,
				     "copy_file_range: %s", strerror(errno));
		while (!__atomic_load_n(&e->done, __ATOMIC_ACQUIRE))
			sched_yield();
		/* Outside the range the store must be there; inside, the store
		 * raced the change and either outcome is right. */
		if (e->at >= len)
			want[e->at] = (unsigned char)e->value;
		migrate_ok(e->fd, 0, ps, round % 2 ? PRIV : PRIV2, -1, -1);
		cr_assert_eq(pread(e->fd, got, ps, 0), ps);
		for (long long i = 0; i < ps; i++) {
			if (i == e->at && i < len && got[i] == e->value)
				continue;
			cr_assert_eq(got[i], want[i], "%s, round %d: byte %lld (%s the range) is "
				     "0x%02x, not 0x%02x", names[*op], round, i,
				     i < len ? "in" : "after", got[i], want[i]);
		}
	}
	__atomic_store_n(&e->stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_assert_eq(e->stores, EDGE_ROUNDS);
	munmap((void *)e->map, ps);
	close(e->fd);
	close(src);
	free(e);
	free(old);
	free(want);
	free(got);
}

ParameterizedTestParameters(migrate_race, a_punch_or_copy_races_with_write_back_of_its_pages)
{
	static enum edge_op ops[] = { EDGE_PUNCH_HALF, EDGE_COPY_HALF, EDGE_COPY_PAGE };
	return cr_make_param_array(enum edge_op, ops, 3);
}

ParameterizedTest(enum edge_op *op, migrate_race, a_punch_or_copy_races_with_write_back_of_its_pages)
{
	edge_race(op);
}

/* With one worker thread, the write-back that dropping the pages causes
 * must still be served: the daemon must not drop them from the worker. */
ParameterizedTestParameters(one_worker, a_punch_or_copy_races_with_write_back_of_its_pages)
{
	static enum edge_op ops[] = { EDGE_PUNCH_HALF, EDGE_COPY_HALF, EDGE_COPY_PAGE };
	return cr_make_param_array(enum edge_op, ops, 3);
}

ParameterizedTest(enum edge_op *op, one_worker, a_punch_or_copy_races_with_write_back_of_its_pages)
{
	edge_race(op);
}

/* -- the randomized test */

#define ST_PROCS 3
#define ST_THREADS 2
#define ST_REGIONS (ST_PROCS * ST_THREADS)
#define ST_TAIL (ST_REGIONS - 1)  /* the only region whose owner changes the size */
#define ST_DEVICES 3

/* Operations the stress journal keeps. */
#define ST_JOURNAL 200

struct stress {
	unsigned seed;
	long long rlen;          /* bytes per region */
	long long size_max;      /* ST_REGIONS * rlen */
	long long tail_size;     /* the file size; only the tail's owner changes it */
	double seconds;
	int workers_done;
	long long ops[ST_REGIONS];
	long long checks[ST_REGIONS];
	long long migrations, moved;
	pthread_barrier_t start;
	struct report report;
	/* The last operations of every process, for a mismatch report: which
	 * migrations and which other regions' operations came just before. */
	uint64_t jnext;
	struct {
		uint64_t seq;
		int region;          /* -1: the migrator */
		char what[120];
	} journal[ST_JOURNAL];
	char dump[ST_JOURNAL * 140]; /* the journal at the first mismatch */
	unsigned char model[];   /* size_max bytes: what every byte must be */
};

/* Record an operation in the journal.  Slots are reused after ST_JOURNAL
 * entries; a torn entry only blurs a diagnostic. */
static void st_journal(struct stress *s, int region, const char *what)
{
	uint64_t seq = __atomic_fetch_add(&s->jnext, 1, __ATOMIC_RELAXED);
	size_t k = seq % ST_JOURNAL;

	s->journal[k].seq = seq;
	s->journal[k].region = region;
	snprintf(s->journal[k].what, sizeof(s->journal[k].what), "%s", what);
}

/* Copy the journal, oldest first, into s->dump (the first mismatch only). */
static void st_journal_dump(struct stress *s)
{
	uint64_t end = __atomic_load_n(&s->jnext, __ATOMIC_RELAXED);
	uint64_t start = end > ST_JOURNAL ? end - ST_JOURNAL : 0;
	size_t used = 0;

	if (__atomic_load_n(&s->report.errors, __ATOMIC_SEQ_CST))
		return;
	for (uint64_t q = start; q < end && used < sizeof(s->dump); q++) {
		size_t k = q % ST_JOURNAL;
		int n = snprintf(s->dump + used, sizeof(s->dump) - used, "\n  #%llu %s %s",
				 (unsigned long long)s->journal[k].seq,
				 s->journal[k].region < 0 ? "migrator:" : "region",
				 s->journal[k].what);

		if (n < 0)
			break;
		used += (size_t)n;
	}
}

struct st_thread {
	struct stress *s;
	int region, fd;
	unsigned char *map, *buf;
	uint64_t rng;
	unsigned wseq;
	long long base;          /* the region's first byte */
	char history[4][96];     /* the last operations, for a mismatch report */
	unsigned nhist;
};

/* The end of the bytes the region may touch now: its end, or the size for the tail. */
static long long st_end(struct st_thread *t)
{
	if (t->region == ST_TAIL)
		return __atomic_load_n(&t->s->tail_size, __ATOMIC_ACQUIRE);
	return t->base + t->s->rlen;
}

/* Compare got with the model at off; on a mismatch, report it with its page's location. */
static bool st_compare(struct st_thread *t, long long off, const unsigned char *got,
		       long long len, const char *how, const char *after)
{
	const unsigned char *want = t->s->model + off;

	t->s->checks[t->region]++;
	if (memcmp(got, want, len) == 0)
		return true;
	for (long long i = 0; i < len; i++) {
		if (got[i] != want[i]) {
			long long bad = 0;
			unsigned char again = 0, daemon = 0;
			int loc = page_location(t->fd, off + i);

			for (long long j = i; j < len; j++)
				bad += got[j] != want[j];
			/* Is it still wrong in the page cache, and in the daemon's copy? */
			if (pread(t->fd, &again, 1, off + i) != 1 ||
			    posix_fadvise(t->fd, (off + i) / page() * page(), page(),
					  POSIX_FADV_DONTNEED) ||
			    pread(t->fd, &daemon, 1, off + i) != 1)
				again = daemon = 0xff;
			st_journal_dump(t->s);
			report_fail(&t->s->report, "seed %u region %d: after %s, %s of [%lld, +%lld) "
				    "at byte %lld: expected 0x%02x, got 0x%02x (%lld bytes differ; "
				    "page at %s; read again: 0x%02x, after dropping the cache: 0x%02x); "
				    "before that: %s; %s; %s",
				    t->s->seed, t->region, after, how, off, len, off + i, want[i],
				    got[i], bad, loc_name(loc), again, daemon,
				    t->history[(t->nhist + 1) % 4], t->history[(t->nhist + 2) % 4],
				    t->history[(t->nhist + 3) % 4]);
			return false;
		}
	}
	return true;
}

/* Check [off, off + len) through pread (or the mapping). */
static bool st_check(struct st_thread *t, long long off, long long len, bool via_map,
		     const char *after)
{
	long long end = st_end(t);
	ssize_t n;

	if (off + len > end)
		len = end - off;
	if (len <= 0)
		return true;
	if (via_map)
		return st_compare(t, off, t->map + off, len, "a load through the mapping", after);
	n = pread(t->fd, t->buf, len, off);
	if (n != len) {
		report_fail(&t->s->report, "seed %u region %d: after %s, pread of %lld at %lld "
			    "returned %zd (%s)", t->s->seed, t->region, after, len, off, n,
			    n < 0 ? strerror(errno) : "short");
		return false;
	}
	return st_compare(t, off, t->buf, len, "pread", after);
}

/* A random range of the region inside [base, limit). */
static void st_range(struct st_thread *t, long long limit, long long *off, long long *len)
{
	long long room = limit - t->base, o, l;

	if (room <= 0) {
		*off = t->base;
		*len = 0;
		return;
	}
	o = (long long)rnd_below(&t->rng, room);
	if (rnd_below(&t->rng, 4) == 0)
		o = o / page() * page();
	l = 1 + (long long)rnd_below(&t->rng, rnd_below(&t->rng, 3) ? page() + 1 : 4 * page());
	if (o + l > room)
		l = room - o;
	*off = t->base + o;
	*len = l;
}

static bool st_step_op(struct st_thread *t, char *after);

static bool st_step(struct st_thread *t)
{
	char *h = t->history[t->nhist % 4];

	char line[120];
	bool ok;

	strcpy(h, "a read");
	ok = st_step_op(t, h);
	snprintf(line, sizeof(line), "%d: %s", t->region, h);
	st_journal(t->s, t->region, line);
	return ok;
}

static bool st_step_op(struct st_thread *t, char *after)
{
	struct stress *s = t->s;
	long long region_end = t->base + s->rlen, end = st_end(t), off, len;
	unsigned op = (unsigned)rnd_below(&t->rng, 100);
	bool tail = t->region == ST_TAIL;

	if (op < 20) {
		/* pwrite; the tail's owner may write past the size, up to its region's end. */
		st_range(t, tail ? region_end : end, &off, &len);
		if (!len)
			return true;
		pattern_fill(t->buf, len, off, s->seed * 7919 + t->region * 100003 + ++t->wseq);
		if (pwrite(t->fd, t->buf, len, off) != len) {
			report_fail(&s->report, "seed %u region %d: pwrite %lld at %lld: %s", s->seed,
				    t->region, len, off, strerror(errno));
			return false;
		}
		memcpy(s->model + off, t->buf, len);
		if (tail && off + len > end)
			__atomic_store_n(&s->tail_size, off + len, __ATOMIC_RELEASE);
		snprintf(after, sizeof(t->history[0]), "pwrite [%lld, +%lld)", off, len);
		return st_check(t, off, len, false, after) &&
		       (rnd_below(&t->rng, 4) || st_check(t, off, len, true, after));
	}
	if (op < 35) {
		st_range(t, end, &off, &len);
		return st_check(t, off, len, false, "a random pread");
	}
	if (op < 50) {
		/* A store through the mapping, checked by pread and by loads. */
		st_range(t, end, &off, &len);
		if (!len)
			return true;
		pattern_fill(s->model + off, len, off, s->seed * 7919 + t->region * 100003 + ++t->wseq);
		memcpy(t->map + off, s->model + off, len);
		snprintf(after, sizeof(t->history[0]), "an mmap store [%lld, +%lld)", off, len);
		if (rnd_below(&t->rng, 8) == 0 &&
		    msync(t->map + off / page() * page(), len + off % page(), MS_SYNC)) {
			report_fail(&s->report, "seed %u region %d: msync: %s", s->seed, t->region,
				    strerror(errno));
			return false;
		}
		return st_check(t, off, len, false, after) && st_check(t, off, len, true, after);
	}
	if (op < 62) {
		st_range(t, end, &off, &len);
		return st_check(t, off, len, true, "a random load");
	}
	if (op < 72) {
		/* Punch a hole; past the size it does nothing. */
		st_range(t, end, &off, &len);
		if (!len)
			return true;
		if (fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len)) {
			report_fail(&s->report, "seed %u region %d: punch %lld at %lld: %s", s->seed,
				    t->region, len, off, strerror(errno));
			return false;
		}
		memset(s->model + off, 0, len);
		snprintf(after, sizeof(t->history[0]), "a punch [%lld, +%lld)", off, len);
		return st_check(t, off - 1 < t->base ? t->base : off - 1, len + 2, false, after) &&
		       st_check(t, off, len, true, after);
	}
	if (op < 78) {
		/* Allocate inside the size: the contents do not change. */
		st_range(t, end, &off, &len);
		if (!len)
			return true;
		if (fallocate(t->fd, FALLOC_FL_KEEP_SIZE, off, len)) {
			report_fail(&s->report, "seed %u region %d: fallocate %lld at %lld: %s",
				    s->seed, t->region, len, off, strerror(errno));
			return false;
		}
		snprintf(after, sizeof(t->history[0]), "fallocate [%lld, +%lld)", off, len);
		return st_check(t, off, len, false, after);
	}
	if (op < 86) {
		long long to;

		if (!tail)
			return st_check(t, t->base, s->rlen, rnd_below(&t->rng, 2), "a region check");
		/* The tail's owner: ftruncate inside its region. */
		to = t->base + (long long)rnd_below(&t->rng, s->rlen + 1);
		if (rnd_below(&t->rng, 3) == 0)
			to = to / page() * page() < t->base ? t->base : to / page() * page();
		if (ftruncate(t->fd, to)) {
			report_fail(&s->report, "seed %u: ftruncate to %lld: %s", s->seed, to,
				    strerror(errno));
			return false;
		}
		if (to < end)
			memset(s->model + to, 0, end - to);
		__atomic_store_n(&s->tail_size, to, __ATOMIC_RELEASE);
		snprintf(after, sizeof(t->history[0]), "ftruncate to %lld (from %lld)", to, end);
		struct stat st;
		if (fstat(t->fd, &st) || st.st_size != to) {
			report_fail(&s->report, "seed %u: %s: the size is %lld", s->seed, after,
				    (long long)st.st_size);
			return false;
		}
		return st_check(t, to > t->base + page() ? to - page() : t->base, 2 * page(),
				false, after);
	}
	/* The whole region, both ways. */
	return st_check(t, t->base, s->rlen, false, "a region check") &&
	       st_check(t, t->base, s->rlen, true, "a region check");
}

static void *st_thread_main(void *arg)
{
	struct st_thread *t = arg;
	uint64_t deadline;

	pthread_barrier_wait(&t->s->start);
	deadline = now_ns() + (uint64_t)(t->s->seconds * 1e9);
	while (now_ns() < deadline) {
		if (!st_step(t))
			break;
		t->nhist++;
		t->s->ops[t->region]++;
		if (__atomic_load_n(&t->s->report.errors, __ATOMIC_RELAXED))
			break;
	}
	/* A last check of the whole region. */
	st_check(t, t->base, t->s->rlen, false, "the end of the run");
	__atomic_add_fetch(&t->s->workers_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static int st_worker_process(struct stress *s, int p, const char *path)
{
	struct st_thread t[ST_THREADS];
	pthread_t tid[ST_THREADS];
	int fd = open(path, O_RDWR);
	unsigned char *map;

	if (fd < 0)
		return 1;
	map = mmap(NULL, s->size_max, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return 2;
	for (int i = 0; i < ST_THREADS; i++) {
		int region = p * ST_THREADS + i;

		t[i] = (struct st_thread){ .s = s, .region = region, .fd = fd, .map = map,
					   .buf = malloc(s->rlen + 2 * page()),
					   .rng = 0x9E3779B97F4A7C15ULL * (s->seed + 1) + region,
					   .base = region * s->rlen };
		if (!t[i].buf || pthread_create(&tid[i], NULL, st_thread_main, &t[i]))
			return 3;
	}
	for (int i = 0; i < ST_THREADS; i++) {
		pthread_join(tid[i], NULL);
		free(t[i].buf);
	}
	munmap(map, s->size_max);
	close(fd);
	return 0;
}

static int st_migrator_process(struct stress *s, const char *path)
{
	int fd = open(path, O_RDONLY);
	uint64_t rng = 0xC2B2AE3D27D4EB4FULL ^ s->seed, deadline;
	long long max_pages = pages_of(s->size_max) + 2;

	if (fd < 0)
		return 1;
	pthread_barrier_wait(&s->start);
	/* The workers stop at their deadline; this one keeps going until they have. */
	deadline = now_ns() + (uint64_t)(s->seconds * 1e9) + 60ULL * 1000000000ULL;
	while (__atomic_load_n(&s->workers_done, __ATOMIC_SEQ_CST) < ST_REGIONS &&
	       now_ns() < deadline) {
		long long first = (long long)rnd_below(&rng, max_pages);
		long long count = rnd_below(&rng, 8) ? 1 + (long long)rnd_below(&rng, 24) : 0;
		int dest = (int)rnd_below(&rng, ST_DEVICES + 1) - 1;
		struct hmm_migrate m = { 0 };
		int rc = hmm_file_migrate(fd, first * page(), count * page(), dest, &m);

		if (rc) {
			report_fail(&s->report, "seed %u: migrating pages [%lld, +%lld) to %s: %s",
				    s->seed, first, count, loc_name(dest), strerror(-rc));
			break;
		}
		s->migrations++;
		s->moved += m.moved;
		{
			char line[100];

			snprintf(line, sizeof(line), "pages [%lld, +%lld) to %s: moved %llu",
				 first, count, loc_name(dest), (unsigned long long)m.moved);
			st_journal(s, -1, line);
		}
	}
	close(fd);
	return 0;
}

static double stress_seconds(void)
{
	const char *e = getenv("HMMFS_STRESS_SECONDS");
	double v = e && *e ? strtod(e, NULL) : 0;

	return v > 0 ? v : 5.0;
}

/* HMMFS_STRESS_SEED shifts every case's seed, so that longer runs (make
 * stress) cover new interleavings and a failure can be replayed. */
static unsigned stress_seed(unsigned base)
{
	const char *e = getenv("HMMFS_STRESS_SEED");

	return base + (e && *e ? (unsigned)strtoul(e, NULL, 0) : 0);
}

/* The file as a whole against the model; say where it differs and what lives there. */
static void st_expect_file(struct stress *s, int fd, const char *when)
{
	long long size = s->tail_size;
	unsigned char *buf = malloc(s->size_max + 1);
	ssize_t n;

	cr_assert_eq(fd_stat(fd).st_size, size, "%s: the size", when);
	n = pread(fd, buf, s->size_max + 1, 0);
	cr_assert_eq(n, size, "%s: pread of the file returned %zd", when, n);
	for (long long i = 0; i < size; i++) {
		if (buf[i] != s->model[i]) {
			long long bad = 0;

			for (long long j = i; j < size; j++)
				bad += buf[j] != s->model[j];
			cr_assert_fail("seed %u, %s: byte %lld (region %lld) is 0x%02x, expected "
				       "0x%02x; %lld bytes differ; page at %s", s->seed, when, i,
				       i / s->rlen, buf[i], s->model[i], bad,
				       loc_name(page_location(fd, i)));
		}
	}
	free(buf);
}

struct stress_case {
	unsigned seed;
	bool aligned;   /* regions of whole pages, or regions that share pages */
};

ParameterizedTestParameters(migrate_race, random_cpu_traffic_racing_with_random_migrations_matches_the_model)
{
	static struct stress_case cases[] = {
		{ 1, true }, { 2, false }, { 3, true }, { 4, false },
		{ 5, true }, { 6, false }, { 7, true }, { 8, false },
	};
	return cr_make_param_array(struct stress_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct stress_case *c, migrate_race,
		  random_cpu_traffic_racing_with_random_migrations_matches_the_model)
{
	long long rlen = c->aligned ? 16 * page() : 12 * page() + 1000;
	size_t total = sizeof(struct stress) + ST_REGIONS * rlen;
	struct stress *s = shared_zalloc(total);
	pthread_barrierattr_t attr;
	pid_t pids[ST_PROCS + 1];
	int fd;

	skip_under_sanitizers_if_children_start_threads();
	s->seed = stress_seed(c->seed);
	s->rlen = rlen;
	s->size_max = ST_REGIONS * rlen;
	s->tail_size = s->size_max;
	s->seconds = stress_seconds();
	pthread_barrierattr_init(&attr);
	pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	cr_assert_eq(pthread_barrier_init(&s->start, &attr, ST_REGIONS + 1), 0);
	pthread_barrierattr_destroy(&attr);

	fd = pattern_file("data", s->size_max, s->seed);
	pattern_fill(s->model, s->size_max, 0, s->seed);
	cr_log_info("seed %u, regions of %lld bytes, %.1f s", s->seed, rlen, s->seconds);

	for (int p = 0; p <= ST_PROCS; p++) {
		pids[p] = fork();
		cr_assert_geq(pids[p], 0);
		if (pids[p] == 0)
			_exit(p < ST_PROCS ? st_worker_process(s, p, mp("data"))
					   : st_migrator_process(s, mp("data")));
	}
	for (int p = 0; p <= ST_PROCS; p++) {
		int status;

		cr_assert_eq(waitpid(pids[p], &status, 0), pids[p]);
		cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "%s %d ended with status %#x", p < ST_PROCS ? "worker" : "migrator", p,
			  status);
	}
	if (s->report.errors)
		cr_log_error("seed %u: the last operations before the first mismatch:%s", s->seed,
			     s->dump);
	expect_no_failures(&s->report);
	for (int r = 0; r < ST_REGIONS; r++)
		cr_assert_gt(s->ops[r], 10, "region %d: only %lld operations", r, s->ops[r]);
	cr_assert_gt(s->migrations, 10, "only %lld migrations", s->migrations);
	cr_assert_gt(s->moved, 0);
	cr_log_info("seed %u: %lld migrations moved %lld pages; ops %lld %lld %lld %lld %lld %lld",
		    s->seed, s->migrations, s->moved, s->ops[0], s->ops[1], s->ops[2], s->ops[3],
		    s->ops[4], s->ops[5]);

	st_expect_file(s, fd, "at the end");
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	st_expect_file(s, fd, "at the end, from the daemon");
	migrate_ok(fd, 0, 0, PRIV, -1, -1);
	st_expect_file(s, fd, "after moving everything to a private device");
	migrate_ok(fd, 0, 0, COH, -1, -1);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	st_expect_file(s, fd, "after moving everything to the coherent device");
	close(fd);
	munmap(s, total);
}
