/* SPDX-License-Identifier: MIT */
/*
 * test_capacity.c - the limits a mount is given: host_mem (file data held,
 * reported by statfs, ENOSPC when full, nothing damaged, freed space
 * reusable), nr_inodes, and page_size (the unit of allocation, of st_blocks
 * and of SEEK_DATA/SEEK_HOLE).
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#define MiB (1024LL * 1024)
#define BIG_PAGE (64 * 1024LL)

static void setup_1m(void)
{
	mnt_setup_opts("host_mem=1M");
}

static void setup_8_inodes(void)
{
	mnt_setup_opts("nr_inodes=8");
}

static void setup_64k(void)
{
	mnt_setup_opts("page_size=64K");
}

static void setup_1m_64k(void)
{
	mnt_setup_opts("host_mem=1M,page_size=64K");
}

TestSuite(capacity, .init = setup_1m, .fini = mnt_teardown);
TestSuite(inodes, .init = setup_8_inodes, .fini = mnt_teardown);
TestSuite(bigpage, .init = setup_64k, .fini = mnt_teardown);
TestSuite(bigpage_capacity, .init = setup_1m_64k, .fini = mnt_teardown);

/* Pages of host_mem=1M at the system page size. */
static long long total_pages(void)
{
	return MiB / page();
}

static struct statvfs fs_stat(void)
{
	struct statvfs sv;

	cr_assert_eq(statvfs(mnt.dir, &sv), 0, "statvfs: %s", strerror(errno));
	return sv;
}

static long long free_pages(void)
{
	return (long long)fs_stat().f_bfree;
}

/*
 * The kernel sends FUSE RELEASE asynchronously, after close(2) has returned,
 * so hmmfs learns of a last close a moment later than tmpfs would.  Space
 * that only a last close frees is therefore polled for, for at most 5 s,
 * instead of expected at the instant close returns; space freed by a
 * synchronous call (unlink of a file no one has open, truncate, punch) is
 * checked at once everywhere else.
 */
static void expect_free_soon(long long pages, unsigned long long inodes, const char *what)
{
	struct timespec tick = { 0, 1000000 };

	for (int i = 0; i < 5000; i++) {
		if (free_pages() == pages && fs_stat().f_ffree == inodes)
			return;
		nanosleep(&tick, NULL);
	}
	cr_assert_eq(free_pages(), pages, "%s: pages", what);
	cr_assert_eq(fs_stat().f_ffree, inodes, "%s: inodes", what);
}

static void expect_enospc_write(int fd, long long off, size_t len)
{
	unsigned char *buf = calloc(1, len);
	ssize_t n;

	cr_assert_not_null(buf);
	n = pwrite(fd, buf, len, off);
	free(buf);
	cr_assert_eq(n, -1, "pwrite(%zu at %lld) returned %zd, expected ENOSPC", len, off, n);
	cr_assert_eq(errno, ENOSPC, "errno %d (%s)", errno, strerror(errno));
}

/*
 * Fill the mount with fd's data from offset 0 in writes of 100000 bytes (not
 * page-aligned): every write but the last that fits is complete, that one is
 * short, and the next fails with ENOSPC.  Return the bytes written.
 */
static long long fill_to_enospc(int fd, unsigned seed)
{
	const size_t chunk = 100000;
	unsigned char *buf = malloc(chunk);
	long long off = 0, room = free_pages() * page();
	ssize_t n;

	cr_assert_not_null(buf);
	for (;;) {
		pattern_fill(buf, chunk, off, seed);
		n = pwrite(fd, buf, chunk, off);
		if (n < 0)
			break;
		if (room - off >= (long long)chunk)
			cr_assert_eq(n, (ssize_t)chunk, "write at %lld is short (%zd) with %lld "
				     "bytes free", off, n, room - off);
		else
			cr_assert_eq(n, room - off, "write at %lld returned %zd, expected the "
				     "%lld bytes that fit", off, n, room - off);
		off += n;
		cr_assert_leq(off, room, "wrote more than host_mem holds");
	}
	cr_assert_eq(errno, ENOSPC, "write failed with errno %d (%s)", errno, strerror(errno));
	cr_assert_eq(off, room, "the first failing write came at %lld of %lld", off, room);
	free(buf);
	return off;
}

/* ---------------------------------------------------------------- statfs */

Test(capacity, statfs_reports_host_mem_in_pages)
{
	struct statvfs sv = fs_stat();

	cr_assert_eq(sv.f_bsize, (unsigned long)page());
	cr_assert_eq(sv.f_frsize, (unsigned long)page());
	cr_assert_eq(sv.f_blocks, (fsblkcnt_t)total_pages(), "f_blocks %llu",
		     (unsigned long long)sv.f_blocks);
	cr_assert_eq(sv.f_bfree, sv.f_blocks, "an empty mount has every page free");
	cr_assert_eq(sv.f_bavail, sv.f_bfree);
	cr_assert_eq(sv.f_namemax, 255);
	cr_assert_gt(sv.f_files, 0);
	cr_assert_lt(sv.f_ffree, sv.f_files, "the root directory uses an inode");
}

Test(capacity, statfs_free_pages_follow_writes_unlink_truncate_and_punch)
{
	long long n = total_pages();
	long p = page();
	int a = create_file("a"), b = create_file("b");
	unsigned long long files = fs_stat().f_ffree;

	write_pattern(a, 0, 10 * p, 1);
	cr_assert_eq(free_pages(), n - 10);
	write_pattern(b, 0, 5 * p + 1, 2);
	cr_assert_eq(free_pages(), n - 16);
	cr_assert_eq(ftruncate(a, 3 * p + 1), 0);
	cr_assert_eq(free_pages(), n - 10, "truncate gives pages back");
	cr_assert_eq(fallocate(b, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, p, 2 * p), 0);
	cr_assert_eq(free_pages(), n - 8, "punching gives pages back");
	close(a);
	cr_assert_eq(unlink(mp("a")), 0);
	expect_free_soon(n - 4, files + 1, "unlink of a closed file gives its pages and inode back");
	cr_assert_eq(ftruncate(b, 0), 0);
	cr_assert_eq(free_pages(), n);
	cr_assert_eq(fs_stat().f_bavail, fs_stat().f_bfree);
	close(b);
}

Test(capacity, unlinked_file_holds_its_pages_until_the_last_close)
{
	long long n = total_pages();
	int a = create_file("a");

	write_pattern(a, 0, 20 * page(), 3);
	cr_assert_eq(unlink(mp("a")), 0);
	cr_assert_eq(free_pages(), n - 20);
	expect_pattern(a, 0, 20 * page(), 3);
	unsigned long long files = fs_stat().f_ffree;
	close(a);
	expect_free_soon(n, files + 1, "the last close of an unlinked file gives its pages back");
}


/* ---------------------------------------------------------------- ENOSPC */

Test(capacity, write_past_host_mem_is_short_then_fails_with_enospc)
{
	int a = create_file("a");
	long long written = fill_to_enospc(a, 4);

	cr_assert_eq(written, MiB);
	cr_assert_eq(fd_stat(a).st_size, MiB);
	cr_assert_eq(fd_stat(a).st_blocks, MiB / 512);
	cr_assert_eq(free_pages(), 0);
	cr_assert_eq(fs_stat().f_bavail, 0);
	expect_enospc_write(a, MiB, 1);
	expect_enospc_write(a, 10 * MiB, page());
	cr_assert_eq(fd_stat(a).st_size, MiB, "failed writes do not change the size");
	expect_pattern(a, 0, MiB, 4);
	cr_assert_eq(fsync(a), 0);
	cr_assert_eq(posix_fadvise(a, 0, 0, POSIX_FADV_DONTNEED), 0);
	expect_pattern(a, 0, MiB, 4);
	close(a);
}

Test(capacity, store_into_a_mapped_hole_when_full_fails_at_msync_with_enospc)
{
	long p = page();
	int a = create_file("a"), b = create_file("b");
	char *map;

	cr_assert_eq(ftruncate(a, 4 * p), 0);
	map = mmap(NULL, 4 * p, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
	cr_assert_neq(map, MAP_FAILED);
	cr_assert_eq(fill_to_enospc(b, 9), MiB);
	/* A hole: its write-back needs a page and there is none (see hmmfs(8), NOTES). */
	map[p] = 42;
	cr_assert_eq(msync(map, 4 * p, MS_SYNC), -1);
	cr_assert_eq(errno, ENOSPC);
	/* Once space is freed, the same store is written back. */
	cr_assert_eq(ftruncate(b, 0), 0);
	map[p] = 43;
	cr_assert_eq(msync(map, 4 * p, MS_SYNC), 0);
	munmap(map, 4 * p);
	/* Read it back from the daemon, not from the page cache. */
	cr_assert_eq(posix_fadvise(a, 0, 0, POSIX_FADV_DONTNEED), 0);
	char c = 0;
	cr_assert_eq(pread(a, &c, 1, p), 1);
	cr_assert_eq(c, 43);
	close(a);
	close(b);
}

Test(capacity, writing_a_new_file_when_full_fails_with_enospc_and_leaves_it_empty)
{
	int a = create_file("a"), b;

	fill_to_enospc(a, 5);
	b = create_file("b"); /* an inode is not a page */
	expect_enospc_write(b, 0, 1);
	expect_enospc_write(b, 0, 3 * page());
	cr_assert_eq(fd_stat(b).st_size, 0);
	cr_assert_eq(fd_stat(b).st_blocks, 0);
	expect_pattern(a, 0, MiB, 5);
	close(b);
	close(a);
}

Test(capacity, overwriting_allocated_pages_when_full_succeeds)
{
	int a = create_file("a");
	long p = page();
	unsigned char *buf;

	fill_to_enospc(a, 6);
	write_pattern(a, 3, 3 * p + 5, 7);
	write_pattern(a, MiB - 10, 10, 7);
	cr_assert_eq(free_pages(), 0);
	expect_pattern(a, 0, 3, 6);
	expect_pattern(a, 3, 3 * p + 5, 7);
	expect_pattern(a, 3 * p + 8, MiB - 3 * p - 18, 6);
	expect_pattern(a, MiB - 10, 10, 7);
	/* A write that starts inside and runs past the allocated end is short. */
	buf = calloc(1, 2 * p);
	cr_assert_not_null(buf);
	cr_assert_eq(pwrite(a, buf, 2 * p, MiB - p), p);
	free(buf);
	cr_assert_eq(fd_stat(a).st_size, MiB);
	close(a);
}

Test(capacity, fallocate_past_host_mem_fails_with_enospc_and_allocates_nothing)
{
	long long n = total_pages();
	long p = page();
	int a = create_file("a"), b = create_file("b");

	write_pattern(a, 0, (n - 56) * p, 8);
	cr_assert_eq(free_pages(), 56);

	cr_assert_eq(fallocate(b, 0, 0, 100 * p), -1);
	cr_assert_eq(errno, ENOSPC, "errno %d (%s)", errno, strerror(errno));
	cr_assert_eq(fd_stat(b).st_size, 0);
	cr_assert_eq(fd_stat(b).st_blocks, 0);
	cr_assert_eq(free_pages(), 56);

	cr_assert_eq(fallocate(b, FALLOC_FL_KEEP_SIZE, 10 * p, 57 * p), -1);
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(fd_stat(b).st_blocks, 0);
	cr_assert_eq(free_pages(), 56);

	/* Extending a file with data: nothing of it is lost, nothing added. */
	cr_assert_eq(fallocate(a, 0, 0, n * p + p), -1);
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(fd_stat(a).st_size, (n - 56) * p);
	cr_assert_eq(fd_stat(a).st_blocks, (n - 56) * p / 512);
	cr_assert_eq(free_pages(), 56);
	expect_pattern(a, 0, (n - 56) * p, 8);

	/* Exactly what is left fits. */
	cr_assert_eq(fallocate(b, 0, 0, 56 * p), 0, "fallocate: %s", strerror(errno));
	cr_assert_eq(free_pages(), 0);
	cr_assert_eq(fd_stat(b).st_size, 56 * p);
	cr_assert_eq(fallocate(b, 0, 56 * p, 1), -1);
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(fd_stat(b).st_size, 56 * p);
	close(a);
	close(b);
}

Test(capacity, space_freed_by_unlink_truncate_and_punch_is_reusable)
{
	long p = page();
	int a = create_file("a"), b, c;

	fill_to_enospc(a, 9);
	close(a);
	cr_assert_eq(unlink(mp("a")), 0);

	b = create_file("b");
	cr_assert_eq(fill_to_enospc(b, 10), MiB, "all of host_mem is usable again after unlink");

	cr_assert_eq(fallocate(b, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 20 * p, 10 * p), 0);
	c = create_file("c");
	write_pattern(c, 0, 10 * p, 11);
	expect_enospc_write(c, 10 * p, 1);

	cr_assert_eq(ftruncate(b, MiB / 2), 0);
	write_pattern(c, 10 * p, MiB / 2, 11);
	expect_enospc_write(c, 10 * p + MiB / 2, 1);

	expect_pattern(b, 0, 20 * p, 10);
	expect_pattern(b, 30 * p, MiB / 2 - 30 * p, 10);
	expect_pattern(c, 0, 10 * p + MiB / 2, 11);
	close(b);
	close(c);
}

Test(capacity, holes_do_not_count_against_host_mem)
{
	long long n = total_pages();
	int a = create_file("a"), b;
	char zero[64] = { 0 }, got[64];

	cr_assert_eq(ftruncate(a, 100 * MiB), 0);
	cr_assert_eq(fd_stat(a).st_blocks, 0);
	cr_assert_eq(free_pages(), n);
	write_pattern(a, 50 * MiB, 1, 12);
	cr_assert_eq(free_pages(), n - 1);
	cr_assert_eq(fd_stat(a).st_blocks, page() / 512);

	/* Full: growing a file still works, and its holes read as zeros. */
	b = create_file("b");
	fill_to_enospc(b, 13);
	cr_assert_eq(ftruncate(a, 1024 * MiB), 0, "ftruncate when full: %s", strerror(errno));
	cr_assert_eq(pread(a, got, sizeof(got), 700 * MiB), (ssize_t)sizeof(got));
	cr_assert_eq(memcmp(got, zero, sizeof(got)), 0);
	expect_pattern(a, 50 * MiB, 1, 12);
	close(a);
	close(b);
}

/* ---------------------------------------------------------------- nr_inodes */

Test(inodes, statfs_reports_nr_inodes_with_the_root_counted)
{
	struct statvfs sv = fs_stat();

	cr_assert_eq(sv.f_files, 8);
	cr_assert_eq(sv.f_ffree, 7);
}

Test(inodes, creating_past_nr_inodes_fails_with_enospc_for_every_kind)
{
	int fd;

	/* The root is one; seven more of mixed kinds fit. */
	fd = create_file("f1");
	close(fd);
	cr_assert_eq(mkdir(mp("d"), 0755), 0);
	cr_assert_eq(symlink("f1", mp("s")), 0);
	cr_assert_eq(mknod(mp("fifo"), S_IFIFO | 0644, 0), 0);
	cr_assert_eq(mknod(mp("d/chr"), S_IFCHR | 0644, makedev(1, 3)), 0);
	fd = create_file("d/f2");
	close(fd);
	cr_assert_eq(mkdir(mp("d/e"), 0755), 0);
	cr_assert_eq(fs_stat().f_ffree, 0);

	cr_assert_eq(open(mp("f3"), O_RDWR | O_CREAT | O_EXCL, 0644), -1);
	cr_assert_eq(errno, ENOSPC, "create: errno %d (%s)", errno, strerror(errno));
	cr_assert_eq(mkdir(mp("d2"), 0755), -1);
	cr_assert_eq(errno, ENOSPC, "mkdir: errno %d (%s)", errno, strerror(errno));
	cr_assert_eq(symlink("f1", mp("s2")), -1);
	cr_assert_eq(errno, ENOSPC, "symlink: errno %d (%s)", errno, strerror(errno));
	cr_assert_eq(mknod(mp("fifo2"), S_IFIFO | 0644, 0), -1);
	cr_assert_eq(errno, ENOSPC, "mknod: errno %d (%s)", errno, strerror(errno));
	cr_assert_eq(access(mp("f3"), F_OK), -1, "a failed create leaves no name behind");
	cr_assert_eq(access(mp("d2"), F_OK), -1);

	/* Giving one back makes room for exactly one. */
	cr_assert_eq(unlink(mp("fifo")), 0);
	cr_assert_eq(fs_stat().f_ffree, 1);
	fd = create_file("f3");
	close(fd);
	cr_assert_eq(mkdir(mp("d2"), 0755), -1);
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(rmdir(mp("d/e")), 0);
	cr_assert_eq(mkdir(mp("d2"), 0755), 0);
}

/* ---------------------------------------------------------------- page_size=64K */

Test(bigpage, st_blksize_and_statfs_block_size_are_the_page_size)
{
	int fd = create_file("f");
	struct statvfs sv = fs_stat();

	cr_assert_eq(fd_stat(fd).st_blksize, BIG_PAGE);
	cr_assert_eq(sv.f_bsize, BIG_PAGE);
	cr_assert_eq(sv.f_frsize, BIG_PAGE);
	close(fd);
}

Test(bigpage, st_blocks_grow_in_whole_pages)
{
	int fd = create_file("f");

	write_pattern(fd, 0, 1, 1);
	cr_assert_eq(fd_stat(fd).st_blocks, BIG_PAGE / 512, "one byte takes a 64 KiB page");
	write_pattern(fd, 4096, 1, 1);
	cr_assert_eq(fd_stat(fd).st_blocks, BIG_PAGE / 512, "the same 64 KiB page");
	write_pattern(fd, BIG_PAGE + 5, 1, 1);
	cr_assert_eq(fd_stat(fd).st_blocks, 2 * BIG_PAGE / 512);
	write_pattern(fd, 10 * BIG_PAGE - 1, 2, 1);
	cr_assert_eq(fd_stat(fd).st_blocks, 4 * BIG_PAGE / 512);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, BIG_PAGE + 100),
		     0);
	cr_assert_eq(fd_stat(fd).st_blocks, 3 * BIG_PAGE / 512,
		     "punching frees only the whole 64 KiB page");
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BIG_PAGE + 100,
			       60000), 0);
	cr_assert_eq(fd_stat(fd).st_blocks, 3 * BIG_PAGE / 512,
		     "a punch inside one page frees nothing");
	close(fd);
}

Test(bigpage, seek_hole_and_seek_data_have_64k_granularity)
{
	int fd = create_file("f");
	long long size = 10 * BIG_PAGE + 100;

	write_pattern(fd, 0, 100, 2);         /* page 0 */
	write_pattern(fd, 3 * BIG_PAGE + 4096, 10, 2); /* page 3 */
	write_pattern(fd, 10 * BIG_PAGE, 100, 2);      /* page 10 */
	cr_assert_eq(fd_stat(fd).st_size, size);
	expect_seek(fd, 0, SEEK_HOLE, BIG_PAGE);
	expect_seek(fd, 4096, SEEK_HOLE, BIG_PAGE);
	expect_seek(fd, 100, SEEK_DATA, 100);
	expect_seek(fd, BIG_PAGE, SEEK_DATA, 3 * BIG_PAGE);
	expect_seek(fd, 3 * BIG_PAGE, SEEK_HOLE, 4 * BIG_PAGE);
	expect_seek(fd, 4 * BIG_PAGE - 1, SEEK_DATA, 4 * BIG_PAGE - 1);
	expect_seek(fd, 4 * BIG_PAGE, SEEK_DATA, 10 * BIG_PAGE);
	expect_seek(fd, 10 * BIG_PAGE, SEEK_HOLE, size);
	close(fd);
}

Test(bigpage_capacity, host_mem_counts_64k_pages)
{
	struct statvfs sv = fs_stat();
	int fd = create_file("f");

	cr_assert_eq(sv.f_blocks, MiB / BIG_PAGE);
	cr_assert_eq(sv.f_bfree, MiB / BIG_PAGE);
	/* One byte in each 64 KiB page fills host_mem after 16 bytes. */
	for (long long i = 0; i < MiB / BIG_PAGE; i++)
		write_pattern(fd, i * 3 * BIG_PAGE + 7, 1, 3);
	cr_assert_eq(fs_stat().f_bfree, 0);
	cr_assert_eq(fd_stat(fd).st_blocks, MiB / 512);
	expect_enospc_write(fd, 100 * BIG_PAGE, 1);
	write_pattern(fd, 3 * BIG_PAGE + 100, 1000, 3); /* inside an allocated page */
	for (long long i = 0; i < MiB / BIG_PAGE; i++)
		expect_pattern(fd, i * 3 * BIG_PAGE + 7, 1, 3);
	close(fd);
}
