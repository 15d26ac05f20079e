/* SPDX-License-Identifier: MIT */
/*
 * test_file.c - regular file data: read/write round trips, holes, truncate,
 * open flags, the 2^52 size limit, SEEK_DATA/SEEK_HOLE, fallocate,
 * copy_file_range and the errors of reads and writes on the wrong kind of fd.
 * tmpfs is the reference for everything except the size limit (tmpfs allows
 * 2^63, hmmfs stops at 2^52 as its spec says).
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/falloc.h>

TestSuite(file, .init = mnt_setup, .fini = mnt_teardown);

#define MAX_FILE_SIZE (1LL << 52)

/* st_blocks that n whole pages account for. */
static long long pages_blocks(long long n)
{
	return n * page() / 512;
}

static void expect_zeros(int fd, long long off, size_t len)
{
	unsigned char *buf = malloc(len ? len : 1);
	ssize_t n;

	cr_assert_not_null(buf);
	memset(buf, 0xee, len);
	n = pread(fd, buf, len, off);
	cr_assert_eq(n, (ssize_t)len, "pread(%zu bytes at %lld) returned %zd (%s)", len, off, n,
		     n < 0 ? strerror(errno) : "short");
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(buf[i], 0, "byte at %lld is 0x%02x, not zero", off + (long long)i,
			     buf[i]);
	free(buf);
}

/* Drop the file's clean page cache so that the next read asks the daemon. */
static void drop_cache(int fd)
{
	cr_assert_eq(fsync(fd), 0, "fsync: %s", strerror(errno));
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
}

/* ---------------------------------------------------------------- round trips */

/* Offsets and lengths as pages + bytes, because the page size is a run-time value. */
struct rw_case {
	int off_pages, off_bytes;
	int len_pages, len_bytes;
};

ParameterizedTestParameters(file, write_then_read_returns_the_same_bytes_at_any_size_and_offset)
{
	static struct rw_case cases[] = {
		{ 0, 0, 0, 0 },         /* nothing */
		{ 0, 0, 0, 1 },         /* one byte */
		{ 0, 0, 1, -1 },        /* page - 1 */
		{ 0, 0, 1, 0 },         /* one page */
		{ 0, 0, 1, 1 },         /* page + 1 */
		{ 0, 0, 37, 0 },        /* many pages */
		{ 0, 1, 0, 1 },         /* one byte after a one-byte hole */
		{ 0, 1, 1, -2 },        /* odd start, ends one byte before a page boundary */
		{ 1, -1, 0, 2 },        /* straddles a page boundary */
		{ 1, -1, 1, 2 },        /* page + 2 across two boundaries */
		{ 3, 5, 0, 4000 },
		{ 5, 0, 0, 1 },         /* one byte after a hole of whole pages */
		{ 0, 0, 256, 3 },       /* 1 MiB + 3 with 4 KiB pages */
		{ 0, 777, 256, 3 },     /* the same at an odd offset */
		{ 9, 4093, 256, 3 },
	};
	return cr_make_param_array(struct rw_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct rw_case *c, file,
		  write_then_read_returns_the_same_bytes_at_any_size_and_offset)
{
	long long off = (long long)c->off_pages * page() + c->off_bytes;
	long long len = (long long)c->len_pages * page() + c->len_bytes;
	long long expect_size = len ? off + len : 0;
	int fd = create_file("f"), fd2;
	unsigned char *buf;
	long long got = 0;
	ssize_t n;

	write_pattern(fd, off, (size_t)len, 11);
	cr_assert_eq(fd_stat(fd).st_size, expect_size, "size %lld after writing %lld at %lld",
		     (long long)fd_stat(fd).st_size, len, off);
	expect_pattern(fd, off, (size_t)len, 11);
	expect_zeros(fd, 0, (size_t)off < (size_t)expect_size ? (size_t)off : 0);

	/* Read it again through another fd, sequentially in odd-sized pieces. */
	fd2 = open(mp("f"), O_RDONLY);
	cr_assert_geq(fd2, 0);
	buf = malloc((size_t)expect_size + 1);
	cr_assert_not_null(buf);
	while ((n = read(fd2, buf + got, 4093)) > 0)
		got += n;
	cr_assert_eq(n, 0, "read: %s", strerror(errno));
	cr_assert_eq(got, expect_size);
	if (len)
		cr_assert_eq(pattern_check(buf + off, (size_t)len, off, 11), -1);
	free(buf);

	/* And once more from the daemon's copy rather than the page cache. */
	drop_cache(fd);
	expect_pattern(fd2, off, (size_t)len, 11);
	close(fd2);
	close(fd);
}

Test(file, overwriting_part_of_a_file_changes_only_the_bytes_written)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 4 * p, 1);
	write_pattern(fd, p - 3, p + 7, 2);
	cr_assert_eq(fd_stat(fd).st_size, 4 * p);
	expect_pattern(fd, 0, p - 3, 1);
	expect_pattern(fd, p - 3, p + 7, 2);
	expect_pattern(fd, 2 * p + 4, 2 * p - 4, 1);
	close(fd);
}

/* ---------------------------------------------------------------- holes, truncate */

Test(file, pwrite_past_eof_leaves_a_hole_that_reads_as_zeros_and_takes_no_blocks)
{
	int fd = create_file("f");
	long p = page();
	struct stat st;

	write_pattern(fd, 5 * p + 100, 10, 3);
	st = fd_stat(fd);
	cr_assert_eq(st.st_size, 5 * p + 110);
	cr_assert_eq(st.st_blocks, pages_blocks(1), "st_blocks %lld, expected one page",
		     (long long)st.st_blocks);
	cr_assert_eq(st.st_blksize, p);
	expect_zeros(fd, 0, 5 * p + 100);
	expect_pattern(fd, 5 * p + 100, 10, 3);

	/* A write straddling a boundary allocates the two pages it touches. */
	write_pattern(fd, 8 * p - 3, 6, 4);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(3));
	expect_zeros(fd, 5 * p + 110, 3 * p - 113);
	drop_cache(fd);
	expect_zeros(fd, 0, 5 * p + 100);
	expect_pattern(fd, 8 * p - 3, 6, 4);
	close(fd);
}

Test(file, ftruncate_shrink_then_grow_reads_zeros_in_the_regrown_part)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 3 * p + 100, 5);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(4));
	cr_assert_eq(ftruncate(fd, p + 10), 0, "ftruncate: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, p + 10);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(2), "pages past the new EOF are freed");
	{
		char c;
		cr_assert_eq(pread(fd, &c, 1, p + 10), 0, "read at EOF returns 0");
	}
	cr_assert_eq(ftruncate(fd, 4 * p), 0);
	cr_assert_eq(fd_stat(fd).st_size, 4 * p);
	expect_pattern(fd, 0, p + 10, 5);
	/* The tail of the partial last page must have been zeroed too. */
	expect_zeros(fd, p + 10, 3 * p - 10);
	drop_cache(fd);
	expect_pattern(fd, 0, p + 10, 5);
	expect_zeros(fd, p + 10, 3 * p - 10);
	close(fd);
}

Test(file, truncate_by_path_shrinks_and_grows)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 2 * p, 6);
	cr_assert_eq(truncate(mp("f"), 7), 0, "truncate: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 7);
	cr_assert_eq(truncate(mp("f"), 3 * p + 1), 0);
	cr_assert_eq(fd_stat(fd).st_size, 3 * p + 1);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(1));
	expect_pattern(fd, 0, 7, 6);
	expect_zeros(fd, 7, 3 * p - 6);
	cr_assert_eq(truncate(mp("f"), 0), 0);
	cr_assert_eq(fd_stat(fd).st_size, 0);
	cr_assert_eq(fd_stat(fd).st_blocks, 0);
	close(fd);
}

Test(file, growing_with_ftruncate_allocates_nothing)
{
	int fd = create_file("f");

	cr_assert_eq(ftruncate(fd, 100 * page() + 3), 0);
	cr_assert_eq(fd_stat(fd).st_size, 100 * page() + 3);
	cr_assert_eq(fd_stat(fd).st_blocks, 0);
	expect_zeros(fd, 0, 100 * page() + 3);
	close(fd);
}

Test(file, truncate_of_a_directory_fails_with_eisdir)
{
	cr_assert_eq(mkdir(mp("d"), 0755), 0);
	cr_assert_eq(truncate(mp("d"), 0), -1);
	cr_assert_eq(errno, EISDIR);
}

Test(file, ftruncate_to_a_negative_length_fails_with_einval)
{
	int fd = create_file("f");

	cr_assert_eq(ftruncate(fd, -1), -1);
	cr_assert_eq(errno, EINVAL);
	close(fd);
}

/* ---------------------------------------------------------------- open flags */

Test(file, o_trunc_empties_the_file_and_frees_its_pages)
{
	int fd = create_file("f"), fd2;
	char c;

	write_pattern(fd, 0, 3 * page() + 1, 7);
	fd2 = open(mp("f"), O_WRONLY | O_TRUNC);
	cr_assert_geq(fd2, 0);
	cr_assert_eq(fd_stat(fd).st_size, 0);
	cr_assert_eq(fd_stat(fd).st_blocks, 0);
	cr_assert_eq(pread(fd, &c, 1, 0), 0);
	/* The old fd writes at its own offset: a hole before it. */
	cr_assert_eq(pwrite(fd2, "x", 1, 10), 1);
	expect_zeros(fd, 0, 10);
	close(fd2);
	close(fd);
}

Test(file, o_trunc_on_a_read_only_open_does_nothing_to_an_empty_file)
{
	int fd = create_file("f");

	close(fd);
	fd = open(mp("f"), O_RDONLY | O_TRUNC);
	cr_assert_geq(fd, 0, "open O_RDONLY|O_TRUNC: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 0);
	close(fd);
}

static void expect_content(const char *rel, const char *want)
{
	char buf[256];
	int fd = open(mp(rel), O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	cr_assert_str_eq(buf, want);
	close(fd);
}

Test(file, o_append_from_two_fds_never_overwrites)
{
	int a = open(mp("f"), O_WRONLY | O_CREAT | O_APPEND, 0644);
	int b = open(mp("f"), O_WRONLY | O_APPEND);

	cr_assert_geq(a, 0);
	cr_assert_geq(b, 0);
	cr_assert_eq(write(a, "aaaa", 4), 4);
	cr_assert_eq(write(b, "bbb", 3), 3);
	cr_assert_eq(write(a, "cc", 2), 2);
	/* pwrite on an O_APPEND fd appends too (Linux ignores the offset). */
	cr_assert_eq(pwrite(b, "d", 1, 0), 1);
	expect_content("f", "aaaabbbccd");
	close(a);
	close(b);
}

Test(file, o_append_from_two_processes_never_overwrites)
{
	int a = open(mp("f"), O_WRONLY | O_CREAT | O_APPEND, 0644);
	int status;
	pid_t pid;

	cr_assert_geq(a, 0);
	cr_assert_eq(write(a, "parent1.", 8), 8);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int b = open(mp("f"), O_WRONLY | O_APPEND);

		if (b < 0 || write(b, "child.", 6) != 6)
			_exit(1);
		_exit(close(b) ? 2 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
	cr_assert_eq(write(a, "parent2", 7), 7);
	expect_content("f", "parent1.child.parent2");
	close(a);
}

Test(file, o_excl_on_an_existing_name_fails_with_eexist)
{
	int fd = create_file("f");

	close(fd);
	cr_assert_eq(open(mp("f"), O_RDWR | O_CREAT | O_EXCL, 0644), -1);
	cr_assert_eq(errno, EEXIST);
	cr_assert_eq(symlink("nowhere", mp("dangling")), 0);
	cr_assert_eq(open(mp("dangling"), O_RDWR | O_CREAT | O_EXCL, 0644), -1);
	cr_assert_eq(errno, EEXIST, "O_EXCL does not follow a dangling symlink");
	cr_assert_eq(access(mp("nowhere"), F_OK), -1);
}

Test(file, o_creat_without_o_excl_opens_an_existing_file_unchanged)
{
	int fd = create_file("f");

	write_pattern(fd, 0, 100, 8);
	close(fd);
	fd = open(mp("f"), O_RDWR | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(fd_stat(fd).st_size, 100);
	cr_assert_eq(fd_stat(fd).st_mode & 07777, 0644);
	expect_pattern(fd, 0, 100, 8);
	close(fd);
}

/* ---------------------------------------------------------------- size limit */

Test(file, pwrite_ending_at_2_pow_52_succeeds_and_past_it_fails_with_efbig)
{
	int fd = create_file("f");

	cr_assert_eq(pwrite(fd, "x", 1, MAX_FILE_SIZE - 1), 1, "pwrite just below 2^52: %s",
		     strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, MAX_FILE_SIZE);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(1));
	cr_assert_eq(pwrite(fd, "y", 1, MAX_FILE_SIZE), -1);
	cr_assert_eq(errno, EFBIG);
	cr_assert_eq(pwrite(fd, "y", 1, 1LL << 60), -1);
	cr_assert_eq(errno, EFBIG);
	cr_assert_eq(fd_stat(fd).st_size, MAX_FILE_SIZE);
	{
		char c = 0;
		cr_assert_eq(pread(fd, &c, 1, MAX_FILE_SIZE - 1), 1);
		cr_assert_eq(c, 'x');
	}
	close(fd);
}

Test(file, ftruncate_to_2_pow_52_succeeds_and_past_it_fails_with_efbig)
{
	int fd = create_file("f");

	cr_assert_eq(ftruncate(fd, MAX_FILE_SIZE), 0, "ftruncate to 2^52: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, MAX_FILE_SIZE);
	cr_assert_eq(ftruncate(fd, MAX_FILE_SIZE + 1), -1);
	cr_assert_eq(errno, EFBIG);
	cr_assert_eq(truncate(mp("f"), MAX_FILE_SIZE + page()), -1);
	cr_assert_eq(errno, EFBIG);
	cr_assert_eq(fd_stat(fd).st_size, MAX_FILE_SIZE);
	cr_assert_eq(fd_stat(fd).st_blocks, 0);
	close(fd);
}

Test(file, fallocate_ending_at_2_pow_52_succeeds_and_past_it_fails_with_efbig)
{
	int fd = create_file("f");

	cr_assert_eq(fallocate(fd, 0, MAX_FILE_SIZE - page(), page()), 0,
		     "fallocate of the last page below 2^52: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, MAX_FILE_SIZE);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(1));
	cr_assert_eq(fallocate(fd, 0, MAX_FILE_SIZE, 1), -1);
	cr_assert_eq(errno, EFBIG);
	cr_assert_eq(fallocate(fd, FALLOC_FL_KEEP_SIZE, MAX_FILE_SIZE - 1, 2), -1);
	cr_assert_eq(errno, EFBIG);
	cr_assert_eq(fd_stat(fd).st_size, MAX_FILE_SIZE);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(1));
	close(fd);
}

/* ---------------------------------------------------------------- SEEK_DATA / SEEK_HOLE */

Test(file, seek_data_and_seek_hole_find_page_granular_extents)
{
	int fd = create_file("f");
	long p = page();
	long long size;

	/* data: page 0, pages 3-4, 10 bytes in page 8; holes: 1-2, 5-7. */
	write_pattern(fd, 0, 100, 1);
	write_pattern(fd, 3 * p + 5, 2 * p - 10, 1);
	write_pattern(fd, 8 * p + 10, 5, 1);
	size = 8 * p + 15;
	cr_assert_eq(fd_stat(fd).st_size, size);

	expect_seek(fd, 0, SEEK_DATA, 0);
	expect_seek(fd, 50, SEEK_DATA, 50);
	expect_seek(fd, 0, SEEK_HOLE, p);
	expect_seek(fd, 99, SEEK_HOLE, p);
	expect_seek(fd, p, SEEK_HOLE, p);
	expect_seek(fd, p + 1, SEEK_HOLE, p + 1);
	expect_seek(fd, p, SEEK_DATA, 3 * p);
	expect_seek(fd, 2 * p + 7, SEEK_DATA, 3 * p);
	expect_seek(fd, 3 * p, SEEK_HOLE, 5 * p);
	expect_seek(fd, 4 * p + 3, SEEK_HOLE, 5 * p);
	expect_seek(fd, 4 * p + 3, SEEK_DATA, 4 * p + 3);
	expect_seek(fd, 5 * p, SEEK_DATA, 8 * p);
	expect_seek(fd, 8 * p, SEEK_DATA, 8 * p);
	expect_seek(fd, 8 * p + 3, SEEK_DATA, 8 * p + 3);
	/* The implicit hole at EOF. */
	expect_seek(fd, 8 * p, SEEK_HOLE, size);
	expect_seek(fd, size - 1, SEEK_HOLE, size);
	expect_seek(fd, size, SEEK_DATA, -1);
	expect_seek(fd, size, SEEK_HOLE, -1);
	expect_seek(fd, size + 100 * p, SEEK_DATA, -1);
	expect_seek(fd, size + 100 * p, SEEK_HOLE, -1);

	/* A trailing hole made by growing: no data after page 8. */
	cr_assert_eq(ftruncate(fd, 12 * p), 0);
	expect_seek(fd, 8 * p + 20, SEEK_DATA, 8 * p + 20);
	expect_seek(fd, 9 * p, SEEK_DATA, -1);
	expect_seek(fd, 8 * p, SEEK_HOLE, 9 * p);
	expect_seek(fd, 10 * p, SEEK_HOLE, 10 * p);
	close(fd);
}

Test(file, seek_data_in_a_file_that_is_all_hole_fails_with_enxio)
{
	int fd = create_file("f");
	long p = page();

	expect_seek(fd, 0, SEEK_DATA, -1);
	expect_seek(fd, 0, SEEK_HOLE, -1);
	cr_assert_eq(ftruncate(fd, 10 * p), 0);
	expect_seek(fd, 0, SEEK_DATA, -1);
	expect_seek(fd, 5 * p + 3, SEEK_DATA, -1);
	expect_seek(fd, 0, SEEK_HOLE, 0);
	expect_seek(fd, 5 * p + 3, SEEK_HOLE, 5 * p + 3);
	expect_seek(fd, 10 * p, SEEK_HOLE, -1);
	close(fd);
}

Test(file, seek_data_or_hole_with_a_negative_offset_fails_with_enxio)
{
	int fd = create_file("f");

	write_pattern(fd, 0, 10, 1);
	expect_seek(fd, -1, SEEK_DATA, -1);
	expect_seek(fd, -1, SEEK_HOLE, -1);
	close(fd);
}

/* ---------------------------------------------------------------- fallocate */

Test(file, fallocate_mode_0_extends_the_size_with_zeroed_allocated_pages)
{
	int fd = create_file("f");
	long p = page();

	cr_assert_eq(fallocate(fd, 0, p + 10, 2 * p), 0, "fallocate: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 3 * p + 10);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(3), "pages 1, 2 and 3 are allocated");
	expect_zeros(fd, 0, 3 * p + 10);
	/* A range inside the file neither shrinks it nor allocates twice. */
	cr_assert_eq(fallocate(fd, 0, 0, p), 0);
	cr_assert_eq(fd_stat(fd).st_size, 3 * p + 10);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(4));
	close(fd);
}

Test(file, fallocate_mode_0_keeps_existing_data)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, p + 5, 9);
	cr_assert_eq(fallocate(fd, 0, 0, 4 * p), 0);
	cr_assert_eq(fd_stat(fd).st_size, 4 * p);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(4));
	expect_pattern(fd, 0, p + 5, 9);
	expect_zeros(fd, p + 5, 3 * p - 5);
	close(fd);
}

Test(file, fallocate_keep_size_allocates_without_changing_the_size)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 100, 10);
	cr_assert_eq(fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 3 * p), 0, "fallocate: %s",
		     strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 100);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(3));
	expect_pattern(fd, 0, 100, 10);
	/* Growing over the preallocated pages shows zeros, not stale data. */
	cr_assert_eq(ftruncate(fd, 3 * p), 0);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(3));
	expect_zeros(fd, 100, 3 * p - 100);
	close(fd);
}

Test(file, fallocate_punch_hole_frees_whole_pages_and_zeroes_partial_ones)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 6 * p, 12);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(6));
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, p + 100,
			       3 * p - 50), 0, "punch: %s", strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 6 * p);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(4), "pages 2 and 3 are freed, got %lld",
		     (long long)fd_stat(fd).st_blocks);
	expect_pattern(fd, 0, p + 100, 12);
	expect_zeros(fd, p + 100, 3 * p - 50);
	expect_pattern(fd, 4 * p + 50, 2 * p - 50, 12);
	expect_seek(fd, 0, SEEK_HOLE, 2 * p);
	expect_seek(fd, 2 * p, SEEK_DATA, 4 * p);
	drop_cache(fd);
	expect_pattern(fd, 0, p + 100, 12);
	expect_zeros(fd, p + 100, 3 * p - 50);
	expect_pattern(fd, 4 * p + 50, 2 * p - 50, 12);
	close(fd);
}

Test(file, fallocate_punch_hole_past_eof_changes_nothing)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 2 * p, 13);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * p, 10 * p), 0);
	cr_assert_eq(fd_stat(fd).st_size, 2 * p);
	cr_assert_eq(fd_stat(fd).st_blocks, pages_blocks(2));
	expect_pattern(fd, 0, 2 * p, 13);
	/* Punching a whole file leaves its size and frees everything. */
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * p), 0);
	cr_assert_eq(fd_stat(fd).st_size, 2 * p);
	cr_assert_eq(fd_stat(fd).st_blocks, 0);
	expect_zeros(fd, 0, 2 * p);
	close(fd);
}

/* The VFS refuses this before any filesystem sees it, with EOPNOTSUPP (not EINVAL). */
Test(file, fallocate_punch_hole_without_keep_size_fails_with_eopnotsupp)
{
	int fd = create_file("f");

	write_pattern(fd, 0, 2 * page(), 14);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, page()), -1);
	cr_assert_eq(errno, EOPNOTSUPP);
	expect_pattern(fd, 0, 2 * page(), 14);
	close(fd);
}

struct mode_case {
	int mode;
	const char *name;
};

ParameterizedTestParameters(file, unsupported_fallocate_modes_fail_with_eopnotsupp)
{
	static struct mode_case cases[] = {
		{ FALLOC_FL_ZERO_RANGE, "ZERO_RANGE" },
		{ FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "ZERO_RANGE|KEEP_SIZE" },
		{ FALLOC_FL_COLLAPSE_RANGE, "COLLAPSE_RANGE" },
		{ FALLOC_FL_INSERT_RANGE, "INSERT_RANGE" },
	};
	return cr_make_param_array(struct mode_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct mode_case *c, file, unsupported_fallocate_modes_fail_with_eopnotsupp)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 4 * p, 15);
	cr_assert_eq(fallocate(fd, c->mode, p, p), -1, "%s succeeded", c->name);
	cr_assert_eq(errno, EOPNOTSUPP, "%s: errno %d (%s)", c->name, errno, strerror(errno));
	cr_assert_eq(fd_stat(fd).st_size, 4 * p);
	expect_pattern(fd, 0, 4 * p, 15);
	close(fd);
}

Test(file, fallocate_with_zero_length_fails_with_einval)
{
	int fd = create_file("f");

	cr_assert_eq(fallocate(fd, 0, 0, 0), -1);
	cr_assert_eq(errno, EINVAL);
	close(fd);
}

/* ---------------------------------------------------------------- copy_file_range */

/* Copy len bytes, tolerating short copies only where the source ends. */
static long long copy_all(int in, long long off_in, int out, long long off_out, long long len)
{
	long long done = 0;

	while (done < len) {
		loff_t i = off_in + done, o = off_out + done;
		ssize_t n = copy_file_range(in, &i, out, &o, (size_t)(len - done), 0);

		cr_assert_geq(n, 0, "copy_file_range: %s", strerror(errno));
		if (n == 0)
			break;
		done += n;
	}
	return done;
}

Test(file, copy_file_range_within_a_file_copies_to_a_non_overlapping_range)
{
	int fd = create_file("f");
	long p = page();
	long long len = 2 * p + 100;

	write_pattern(fd, 0, 3 * p + 7, 16);
	cr_assert_eq(copy_all(fd, 10, fd, 5 * p + 3, len), len);
	cr_assert_eq(fd_stat(fd).st_size, 5 * p + 3 + len);
	expect_pattern(fd, 0, 3 * p + 7, 16);
	expect_zeros(fd, 3 * p + 7, 2 * p - 4);
	{
		unsigned char *buf = malloc(len);
		cr_assert_not_null(buf);
		cr_assert_eq(pread(fd, buf, len, 5 * p + 3), len);
		cr_assert_eq(pattern_check(buf, len, 10, 16), -1);
		free(buf);
	}
	close(fd);
}

Test(file, copy_file_range_onto_an_overlapping_range_of_the_same_file_fails_with_einval)
{
	int fd = create_file("f");
	loff_t i = 0, o = 100;

	write_pattern(fd, 0, 3 * page(), 17);
	cr_assert_eq(copy_file_range(fd, &i, fd, &o, page(), 0), -1);
	cr_assert_eq(errno, EINVAL);
	expect_pattern(fd, 0, 3 * page(), 17);
	close(fd);
}

Test(file, copy_file_range_across_files_copies_the_bytes_and_leaves_the_rest)
{
	int a = create_file("a"), b = create_file("b");
	long p = page();
	long long len = 300 * p + 5;

	write_pattern(a, 0, len + 7, 18);
	write_pattern(b, 0, 2 * p, 19);
	cr_assert_eq(copy_all(a, 7, b, p + 1, len), len);
	cr_assert_eq(fd_stat(b).st_size, p + 1 + len);
	expect_pattern(b, 0, p + 1, 19);
	{
		unsigned char *buf = malloc(len);
		cr_assert_not_null(buf);
		cr_assert_eq(pread(b, buf, len, p + 1), len);
		cr_assert_eq(pattern_check(buf, len, 7, 18), -1);
		drop_cache(b);
		memset(buf, 0, len);
		cr_assert_eq(pread(b, buf, len, p + 1), len);
		cr_assert_eq(pattern_check(buf, len, 7, 18), -1, "after dropping the cache");
		free(buf);
	}
	expect_pattern(a, 0, len + 7, 18);
	close(a);
	close(b);
}

Test(file, copy_file_range_past_source_eof_is_short)
{
	int a = create_file("a"), b = create_file("b");
	loff_t i = 500, o = 0;
	ssize_t n;

	write_pattern(a, 0, 1000, 20);
	n = copy_file_range(a, &i, b, &o, 2000, 0);
	cr_assert_eq(n, 500, "copied %zd (%s)", n, n < 0 ? strerror(errno) : "");
	cr_assert_eq(i, 1000);
	cr_assert_eq(o, 500);
	cr_assert_eq(fd_stat(b).st_size, 500);
	{
		unsigned char buf[500];
		cr_assert_eq(pread(b, buf, 500, 0), 500);
		cr_assert_eq(pattern_check(buf, 500, 500, 20), -1);
	}
	i = 1000;
	cr_assert_eq(copy_file_range(a, &i, b, &o, 10, 0), 0, "nothing to copy at EOF");
	i = 5000;
	cr_assert_eq(copy_file_range(a, &i, b, &o, 10, 0), 0, "nothing to copy past EOF");
	cr_assert_eq(fd_stat(b).st_size, 500);
	close(a);
	close(b);
}

Test(file, copy_file_range_from_a_sparse_source_copies_zeros_for_holes)
{
	int a = create_file("a"), b = create_file("b");
	long p = page();

	write_pattern(a, 0, p, 21);
	write_pattern(a, 5 * p + 1, 10, 22);
	cr_assert_eq(ftruncate(a, 8 * p), 0);
	/* The destination had data where the source has holes. */
	write_pattern(b, 0, 8 * p, 23);
	cr_assert_eq(copy_all(a, 0, b, 0, 8 * p), 8 * p);
	cr_assert_eq(fd_stat(b).st_size, 8 * p);
	expect_pattern(b, 0, p, 21);
	expect_zeros(b, p, 4 * p + 1);
	expect_pattern(b, 5 * p + 1, 10, 22);
	expect_zeros(b, 5 * p + 11, 3 * p - 11);
	drop_cache(b);
	expect_pattern(b, 0, p, 21);
	expect_zeros(b, p, 4 * p + 1);
	expect_pattern(b, 5 * p + 1, 10, 22);
	expect_zeros(b, 5 * p + 11, 3 * p - 11);
	close(a);
	close(b);
}

Test(file, copy_file_range_from_a_write_only_fd_fails_with_ebadf)
{
	int a = create_file("a"), b = create_file("b"), w;
	loff_t i = 0, o = 0;

	write_pattern(a, 0, 10, 24);
	w = open(mp("a"), O_WRONLY);
	cr_assert_geq(w, 0);
	cr_assert_eq(copy_file_range(w, &i, b, &o, 10, 0), -1);
	cr_assert_eq(errno, EBADF);
	close(w);
	close(a);
	close(b);
}

/* ---------------------------------------------------------------- wrong fds */

Test(file, read_on_a_write_only_fd_fails_with_ebadf)
{
	int fd = create_file("f"), w;
	char c;

	write_pattern(fd, 0, 10, 25);
	w = open(mp("f"), O_WRONLY);
	cr_assert_geq(w, 0);
	cr_assert_eq(read(w, &c, 1), -1);
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(pread(w, &c, 1, 0), -1);
	cr_assert_eq(errno, EBADF);
	close(w);
	close(fd);
}

Test(file, write_on_a_read_only_fd_fails_with_ebadf)
{
	int fd = create_file("f"), r;

	close(fd);
	r = open(mp("f"), O_RDONLY);
	cr_assert_geq(r, 0);
	cr_assert_eq(write(r, "x", 1), -1);
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(pwrite(r, "x", 1, 0), -1);
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(ftruncate(r, 10), -1);
	cr_assert_eq(errno, EINVAL, "ftruncate on a read-only fd is EINVAL, as on tmpfs");
	cr_assert_eq(fallocate(r, 0, 0, 10), -1);
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(fd_stat(r).st_size, 0);
	close(r);
}

Test(file, read_and_write_on_an_o_path_fd_fail_with_ebadf)
{
	int fd = create_file("f"), o;
	char c;

	close(fd);
	o = open(mp("f"), O_PATH);
	cr_assert_geq(o, 0);
	cr_assert_eq(read(o, &c, 1), -1);
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(write(o, "x", 1), -1);
	cr_assert_eq(errno, EBADF);
	close(o);
}

Test(file, read_on_a_directory_fd_fails_with_eisdir)
{
	int d;
	char c;

	cr_assert_eq(mkdir(mp("d"), 0755), 0);
	d = open(mp("d"), O_RDONLY | O_DIRECTORY);
	cr_assert_geq(d, 0);
	cr_assert_eq(read(d, &c, 1), -1);
	cr_assert_eq(errno, EISDIR);
	cr_assert_eq(pread(d, &c, 1, 0), -1);
	cr_assert_eq(errno, EISDIR);
	cr_assert_eq(write(d, "x", 1), -1);
	cr_assert_eq(errno, EBADF);
	close(d);
}

Test(file, opening_a_directory_for_writing_fails_with_eisdir)
{
	cr_assert_eq(mkdir(mp("d"), 0755), 0);
	cr_assert_eq(open(mp("d"), O_WRONLY), -1);
	cr_assert_eq(errno, EISDIR);
	cr_assert_eq(open(mp("d"), O_RDWR), -1);
	cr_assert_eq(errno, EISDIR);
	cr_assert_eq(open(mp("d"), O_RDONLY | O_TRUNC), -1);
	cr_assert_eq(errno, EISDIR);
}

Test(file, fsync_and_fdatasync_succeed_on_files_and_directories)
{
	int fd = create_file("f"), d;

	write_pattern(fd, 0, 3 * page() + 1, 26);
	cr_assert_eq(fsync(fd), 0, "fsync: %s", strerror(errno));
	cr_assert_eq(fdatasync(fd), 0, "fdatasync: %s", strerror(errno));
	cr_assert_eq(syncfs(fd), 0, "syncfs: %s", strerror(errno));
	expect_pattern(fd, 0, 3 * page() + 1, 26);
	cr_assert_eq(mkdir(mp("d"), 0755), 0);
	d = open(mp("d"), O_RDONLY | O_DIRECTORY);
	cr_assert_geq(d, 0);
	cr_assert_eq(fsync(d), 0, "fsync of a directory: %s", strerror(errno));
	cr_assert_eq(fdatasync(d), 0);
	close(d);
	close(fd);
}

Test(file, unlinked_open_file_keeps_its_data_until_closed)
{
	int fd = create_file("f");
	long p = page();

	write_pattern(fd, 0, 3 * p, 27);
	cr_assert_eq(unlink(mp("f")), 0);
	cr_assert_eq(fd_stat(fd).st_nlink, 0);
	expect_pattern(fd, 0, 3 * p, 27);
	write_pattern(fd, 3 * p, p + 1, 27);
	cr_assert_eq(fd_stat(fd).st_size, 4 * p + 1);
	expect_pattern(fd, 0, 4 * p + 1, 27);
	cr_assert_eq(access(mp("f"), F_OK), -1);
	cr_assert_eq(errno, ENOENT);
	close(fd);
}
