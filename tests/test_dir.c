/* SPDX-License-Identifier: MIT */
/*
 * test_dir.c - directories and the namespace: mkdir/rmdir, readdir, hard
 * links, symlinks, rename and renameat2, unlink of open files, mknod, name
 * length limits and path resolution errors.  tmpfs is the reference.
 */
#define _GNU_SOURCE
#include "config.h"
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif

/* tmpfs accounts each directory entry as 20 bytes on top of 40 for . and .. */
#define DIR_BASE_SIZE 40
#define DIR_ENTRY_SIZE 20

static void dir_setup(void)
{
	umask(0);
	mnt_setup();
}

TestSuite(dir, .init = dir_setup, .fini = mnt_teardown);

static char *read_all(const char *path)
{
	static __thread char buf[4096];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	cr_assert_geq(n, 0);
	buf[n] = 0;
	close(fd);
	return buf;
}

/* Names in a directory other than . and .., with a count per name. */
struct listing {
	char **names;
	size_t n, cap;
	int dots;
};

static void listing_add(struct listing *l, const char *name)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->names = realloc(l->names, l->cap * sizeof(*l->names));
		cr_assert_not_null(l->names);
	}
	l->names[l->n++] = strdup(name);
}

static struct listing list_dir(const char *path)
{
	struct listing l = { 0 };
	DIR *d = opendir(path);
	struct dirent *de;

	cr_assert_not_null(d, "opendir %s: %s", path, strerror(errno));
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			l.dots++;
		else
			listing_add(&l, de->d_name);
	}
	cr_assert_eq(errno, 0, "readdir %s: %s", path, strerror(errno));
	closedir(d);
	if (l.n)
		qsort(l.names, l.n, sizeof(*l.names), cmp_str);
	return l;
}

static void listing_free(struct listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
}

/* ---- mkdir and rmdir ---------------------------------------------------- */

Test(dir, fresh_mount_root_is_an_empty_directory)
{
	struct listing l = list_dir(mnt.dir);
	struct stat st = stat_of(mnt.dir);

	cr_expect_eq(l.n, 0, "the new mount holds %zu entries (first: %s)", l.n,
		     l.n ? l.names[0] : "");
	cr_expect_eq(l.dots, 2, "readdir of the root returned %d of . and ..", l.dots);
	cr_expect(S_ISDIR(st.st_mode));
	cr_expect_eq(st.st_nlink, 2, "root nlink %lu", (unsigned long)st.st_nlink);
	cr_expect_eq(st.st_size, DIR_BASE_SIZE, "root size %lld", (long long)st.st_size);
	listing_free(&l);
}

Test(dir, mkdir_creates_a_directory_with_the_mode_asked_and_nlink_two)
{
	struct stat st;

	assert_ok(mkdir(at("d"), 0751));
	st = stat_of(at("d"));
	cr_assert(S_ISDIR(st.st_mode), "mode %o", st.st_mode);
	cr_expect_eq(st.st_mode & 07777, 0751, "mode %o", st.st_mode & 07777);
	cr_expect_eq(st.st_nlink, 2);
	cr_expect_eq(st.st_size, DIR_BASE_SIZE);
	cr_expect_eq(st.st_uid, getuid());
	cr_expect_eq(st.st_gid, getgid());
}

Test(dir, mkdir_of_an_existing_name_fails_with_eexist)
{
	assert_ok(mkdir(at("d"), 0755));
	make_file(at("f"), NULL);
	assert_ok(symlink("nowhere", at("s")));
	assert_fails(mkdir(at("d"), 0755), EEXIST);
	assert_fails(mkdir(at("f"), 0755), EEXIST);
	assert_fails(mkdir(at("s"), 0755), EEXIST);
	cr_expect(S_ISREG(stat_of(at("f")).st_mode));
	cr_expect(S_ISLNK(stat_of(at("s")).st_mode));
}

Test(dir, mkdir_with_a_missing_parent_fails_with_enoent)
{
	assert_fails(mkdir(at("missing/d"), 0755), ENOENT);
	assert_fails(mkdir(at("missing/deeper/d"), 0755), ENOENT);
}

Test(dir, mkdir_under_a_regular_file_fails_with_enotdir)
{
	make_file(at("f"), NULL);
	assert_fails(mkdir(at("f/d"), 0755), ENOTDIR);
}

Test(dir, rmdir_of_non_empty_directory_fails_with_enotempty)
{
	assert_ok(mkdir(at("d"), 0755));
	make_file(at("d/f"), NULL);
	assert_fails(rmdir(at("d")), ENOTEMPTY);
	assert_ok(mkdir(at("e"), 0755));
	assert_ok(mkdir(at("e/sub"), 0755));
	assert_fails(rmdir(at("e")), ENOTEMPTY);
	/* Nothing was lost. */
	cr_expect(S_ISREG(stat_of(at("d/f")).st_mode));
	cr_expect(S_ISDIR(stat_of(at("e/sub")).st_mode));
}

Test(dir, rmdir_of_a_regular_file_fails_with_enotdir)
{
	make_file(at("f"), NULL);
	assert_fails(rmdir(at("f")), ENOTDIR);
	cr_expect(S_ISREG(stat_of(at("f")).st_mode));
}

Test(dir, rmdir_of_a_missing_name_fails_with_enoent)
{
	assert_fails(rmdir(at("nothing")), ENOENT);
}

Test(dir, rmdir_removes_an_empty_directory_and_drops_parent_nlink)
{
	assert_ok(mkdir(at("p"), 0755));
	assert_ok(mkdir(at("p/c"), 0755));
	cr_assert_eq(stat_of(at("p")).st_nlink, 3);
	assert_ok(rmdir(at("p/c")));
	cr_expect_eq(stat_of(at("p")).st_nlink, 2);
	assert_fails(access(at("p/c"), F_OK), ENOENT);
	assert_ok(mkdir(at("p/c"), 0755)); /* the name is free again */
}

Test(dir, unlink_of_a_directory_fails_with_eisdir)
{
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(unlink(at("d")), EISDIR);
	cr_expect(S_ISDIR(stat_of(at("d")).st_mode));
}

Test(dir, directory_size_is_forty_plus_twenty_per_entry)
{
	assert_ok(mkdir(at("d"), 0755));
	cr_expect_eq(stat_of(at("d")).st_size, DIR_BASE_SIZE);
	make_file(at("d/a"), NULL);
	assert_ok(mkdir(at("d/b"), 0755));
	assert_ok(symlink("a", at("d/c")));
	assert_ok(mknod(at("d/p"), S_IFIFO | 0644, 0));
	cr_expect_eq(stat_of(at("d")).st_size, DIR_BASE_SIZE + 4 * DIR_ENTRY_SIZE, "size %lld",
		     (long long)stat_of(at("d")).st_size);
	assert_ok(unlink(at("d/a")));
	assert_ok(rmdir(at("d/b")));
	cr_expect_eq(stat_of(at("d")).st_size, DIR_BASE_SIZE + 2 * DIR_ENTRY_SIZE, "size %lld",
		     (long long)stat_of(at("d")).st_size);
	/* A hard link is one more entry; renaming within the directory is not. */
	assert_ok(link(at("d/c"), at("d/c2")));
	assert_ok(rename(at("d/p"), at("d/p2")));
	cr_expect_eq(stat_of(at("d")).st_size, DIR_BASE_SIZE + 3 * DIR_ENTRY_SIZE);
}

Test(dir, directory_nlink_is_two_plus_the_number_of_subdirectories)
{
	assert_ok(mkdir(at("d"), 0755));
	for (int i = 0; i < 5; i++)
		assert_ok(mkdir(at("d/sub%d", i), 0755));
	make_file(at("d/file"), NULL);
	assert_ok(symlink("sub0", at("d/link")));
	assert_ok(mknod(at("d/fifo"), S_IFIFO | 0600, 0));
	cr_expect_eq(stat_of(at("d")).st_nlink, 7, "nlink %lu",
		     (unsigned long)stat_of(at("d")).st_nlink);
	cr_expect_eq(stat_of(at("d/sub0")).st_nlink, 2);
	assert_ok(rmdir(at("d/sub3")));
	cr_expect_eq(stat_of(at("d")).st_nlink, 6);
	cr_expect_eq(stat_of(mnt.dir).st_nlink, 3, "root nlink %lu",
		     (unsigned long)stat_of(mnt.dir).st_nlink);
}

/* ---- readdir ------------------------------------------------------------ */

Test(dir, readdir_returns_every_entry_exactly_once_with_2000_files)
{
	enum { N = 2000 };
	struct listing l;

	assert_ok(mkdir(at("big"), 0755));
	for (int i = 0; i < N; i++) {
		int fd = open(at("big/file-%04d", i), O_CREAT | O_EXCL | O_WRONLY, 0644);

		cr_assert_geq(fd, 0, "create file-%04d: %s", i, strerror(errno));
		close(fd);
	}
	l = list_dir(at("big"));
	cr_expect_eq(l.dots, 2, ". and .. seen %d times in all", l.dots);
	cr_assert_eq(l.n, N, "readdir returned %zu names for %d files", l.n, N);
	/* Sorted, so name i must be file-i exactly: no duplicates, none missing. */
	for (int i = 0; i < N; i++) {
		char want[32];

		snprintf(want, sizeof(want), "file-%04d", i);
		cr_assert_str_eq(l.names[i], want, "entry %d is %s", i, l.names[i]);
	}
	cr_expect_eq(stat_of(at("big")).st_size, DIR_BASE_SIZE + N * DIR_ENTRY_SIZE);
	listing_free(&l);
}

Test(dir, readdir_of_an_empty_directory_returns_only_dot_and_dotdot)
{
	DIR *d;
	struct dirent *de;
	int n = 0, dot = 0, dotdot = 0;
	struct stat self, parent;

	assert_ok(mkdir(at("e"), 0755));
	self = stat_of(at("e"));
	parent = stat_of(mnt.dir);
	d = opendir(at("e"));
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		n++;
		if (!strcmp(de->d_name, ".")) {
			dot++;
			cr_expect_eq(de->d_ino, self.st_ino, ". has ino %lu, want %lu",
				     (unsigned long)de->d_ino, (unsigned long)self.st_ino);
		} else if (!strcmp(de->d_name, "..")) {
			dotdot++;
		}
		cr_expect_eq(de->d_type, DT_DIR, "%s has d_type %d", de->d_name, de->d_type);
	}
	closedir(d);
	cr_expect_eq(n, 2);
	cr_expect_eq(dot, 1);
	cr_expect_eq(dotdot, 1);
	(void)parent;
}

struct dtype_case {
	const char *name;
	unsigned char type;
};

Test(dir, readdir_reports_the_right_d_type_for_each_kind_of_file)
{
	static const struct dtype_case want[] = {
		{ "reg", DT_REG }, { "dir", DT_DIR },  { "lnk", DT_LNK }, { "fifo", DT_FIFO },
		{ "sock", DT_SOCK }, { "chr", DT_CHR }, { "blk", DT_BLK },
	};
	int seen[sizeof(want) / sizeof(want[0])] = { 0 };
	DIR *d;
	struct dirent *de;

	assert_ok(mkdir(at("t"), 0755));
	make_file(at("t/reg"), NULL);
	assert_ok(mkdir(at("t/dir"), 0755));
	assert_ok(symlink("reg", at("t/lnk")));
	assert_ok(mknod(at("t/fifo"), S_IFIFO | 0644, 0));
	assert_ok(mknod(at("t/sock"), S_IFSOCK | 0644, 0));
	assert_ok(mknod(at("t/chr"), S_IFCHR | 0644, makedev(1, 3)));
	assert_ok(mknod(at("t/blk"), S_IFBLK | 0644, makedev(7, 0)));
	d = opendir(at("t"));
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
			if (strcmp(de->d_name, want[i].name))
				continue;
			seen[i]++;
			cr_expect_eq(de->d_type, want[i].type, "%s: d_type %d, want %d",
				     de->d_name, de->d_type, want[i].type);
			st = stat_of(at("t/%s", de->d_name));
			cr_expect_eq(de->d_ino, st.st_ino, "%s: d_ino %lu, st_ino %lu",
				     de->d_name, (unsigned long)de->d_ino,
				     (unsigned long)st.st_ino);
		}
	}
	closedir(d);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		cr_expect_eq(seen[i], 1, "%s seen %d times", want[i].name, seen[i]);
}

/*
 * POSIX leaves open whether entries added or removed during a readdir loop
 * are returned, but every entry that stays put must come exactly once.
 */
Test(dir, readdir_loop_survives_entries_created_and_removed_during_iteration)
{
	enum { N = 600 };
	static int seen[N];
	DIR *d;
	struct dirent *de;
	int created = 0, steps = 0;

	assert_ok(mkdir(at("churn"), 0755));
	for (int i = 0; i < N; i++)
		make_file(at("churn/f%03d", i), NULL);
	d = opendir(at("churn"));
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		int i;

		cr_assert_lt(++steps, 10 * N, "readdir does not terminate");
		if (sscanf(de->d_name, "f%d", &i) == 1 && i >= 0 && i < N)
			seen[i]++;
		/* Files whose number is 1 mod 3 are churned: removed and created. */
		if (steps % 7 == 0) {
			for (int k = 0; k < 3; k++) {
				int victim = (steps * 13 + k * 101) % N;

				if (victim % 3 == 1)
					unlink(at("churn/f%03d", victim));
			}
			make_file(at("churn/new%04d", created++), NULL);
			unlink(at("churn/new%04d", created / 2));
		}
	}
	closedir(d);
	for (int i = 0; i < N; i++) {
		if (i % 3 == 1)
			cr_expect_leq(seen[i], 1, "churned f%03d seen %d times", i, seen[i]);
		else
			cr_expect_eq(seen[i], 1, "untouched f%03d seen %d times", i, seen[i]);
	}
	/* The directory is still consistent afterwards. */
	struct listing l = list_dir(at("churn"));
	cr_expect_eq(stat_of(at("churn")).st_size, DIR_BASE_SIZE + (off_t)l.n * DIR_ENTRY_SIZE,
		     "size %lld with %zu entries", (long long)stat_of(at("churn")).st_size, l.n);
	for (size_t i = 1; i < l.n; i++)
		cr_expect_str_neq(l.names[i - 1], l.names[i], "duplicate name %s", l.names[i]);
	listing_free(&l);
}

static void read_names(DIR *d, int n, char names[][256])
{
	for (int i = 0; i < n; i++) {
		struct dirent *de = readdir(d);

		cr_assert_not_null(de, "directory ended after %d of %d entries", i, n);
		snprintf(names[i], 256, "%s", de->d_name);
	}
}

Test(dir, seekdir_to_a_telldir_position_resumes_at_the_same_entry)
{
	enum { N = 300 };
	char first[5][256], again[5][256], all[N + 2][256];
	DIR *d;
	long pos;

	assert_ok(mkdir(at("s"), 0755));
	for (int i = 0; i < N; i++)
		make_file(at("s/entry-with-a-longish-name-%03d", i), NULL);
	d = opendir(at("s"));
	cr_assert_not_null(d);
	read_names(d, 150, all);
	pos = telldir(d);
	cr_assert_geq(pos, 0);
	read_names(d, 5, first);
	/* Read further so the library buffer moves past the saved position. */
	read_names(d, 100, all);
	seekdir(d, pos);
	read_names(d, 5, again);
	for (int i = 0; i < 5; i++)
		cr_expect_str_eq(again[i], first[i], "after seekdir entry %d is %s, was %s", i,
				 again[i], first[i]);
	/* rewinddir starts over and the whole listing comes back. */
	rewinddir(d);
	int n = 0;
	while (readdir(d))
		n++;
	cr_expect_eq(n, N + 2, "after rewinddir %d entries, want %d", n, N + 2);
	closedir(d);
}

Test(dir, telldir_position_stays_valid_after_earlier_entries_are_removed)
{
	enum { N = 200 };
	char before[100][256], next[1][256], again[1][256];
	DIR *d;
	long pos;

	assert_ok(mkdir(at("s"), 0755));
	for (int i = 0; i < N; i++)
		make_file(at("s/f%03d", i), NULL);
	d = opendir(at("s"));
	cr_assert_not_null(d);
	read_names(d, 100, before);
	pos = telldir(d);
	read_names(d, 1, next);
	/* Remove entries already returned (other than . and ..). */
	for (int i = 0; i < 100; i++)
		if (strcmp(before[i], ".") && strcmp(before[i], ".."))
			assert_ok(unlink(at("s/%s", before[i])));
	seekdir(d, pos);
	read_names(d, 1, again);
	cr_expect_str_eq(again[0], next[0], "seekdir resumed at %s, want %s", again[0], next[0]);
	closedir(d);
}

/* ---- hard links --------------------------------------------------------- */

Test(dir, link_adds_a_name_for_the_same_inode_and_counts_nlink)
{
	struct stat a, b;

	make_file(at("a"), "shared");
	assert_ok(link(at("a"), at("b")));
	a = stat_of(at("a"));
	b = stat_of(at("b"));
	cr_expect_eq(a.st_ino, b.st_ino);
	cr_expect_eq(a.st_nlink, 2);
	cr_expect_eq(b.st_nlink, 2);
	cr_expect_str_eq(read_all(at("b")), "shared");
	assert_ok(mkdir(at("d"), 0755));
	assert_ok(link(at("b"), at("d/c")));
	cr_expect_eq(stat_of(at("a")).st_nlink, 3);
	assert_ok(unlink(at("a")));
	cr_expect_eq(stat_of(at("b")).st_nlink, 2);
	assert_ok(unlink(at("d/c")));
	cr_expect_eq(stat_of(at("b")).st_nlink, 1);
	cr_expect_str_eq(read_all(at("b")), "shared");
}

Test(dir, link_to_a_directory_fails_with_eperm)
{
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(link(at("d"), at("d2")), EPERM);
	assert_fails(access(at("d2"), F_OK), ENOENT);
	cr_expect_eq(stat_of(at("d")).st_nlink, 2);
}

Test(dir, link_onto_an_existing_name_fails_with_eexist)
{
	make_file(at("a"), "a");
	make_file(at("b"), "b");
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(link(at("a"), at("b")), EEXIST);
	assert_fails(link(at("a"), at("d")), EEXIST);
	assert_fails(link(at("a"), at("a")), EEXIST);
	cr_expect_eq(stat_of(at("a")).st_nlink, 1);
	cr_expect_str_eq(read_all(at("b")), "b");
}

Test(dir, link_of_a_missing_source_fails_with_enoent)
{
	assert_fails(link(at("missing"), at("new")), ENOENT);
	assert_fails(access(at("new"), F_OK), ENOENT);
}

Test(dir, link_to_a_symlink_links_the_symlink_itself)
{
	make_file(at("f"), NULL);
	assert_ok(symlink("f", at("s")));
	assert_ok(linkat(AT_FDCWD, at("s"), AT_FDCWD, at("s2"), 0));
	cr_expect(S_ISLNK(stat_of(at("s2")).st_mode));
	cr_expect_eq(stat_of(at("s2")).st_ino, stat_of(at("s")).st_ino);
	cr_expect_eq(stat_of(at("s")).st_nlink, 2);
	cr_expect_eq(stat_of(at("f")).st_nlink, 1);
}

/* ---- symlinks ----------------------------------------------------------- */

Test(dir, symlink_readlink_returns_the_target_and_lstat_size_is_its_length)
{
	char buf[256];
	ssize_t n;
	struct stat st;

	make_file(at("target"), "data");
	assert_ok(symlink("target", at("s")));
	n = readlink(at("s"), buf, sizeof(buf));
	cr_assert_eq(n, 6);
	cr_expect_eq(memcmp(buf, "target", 6), 0);
	st = stat_of(at("s"));
	cr_expect(S_ISLNK(st.st_mode));
	cr_expect_eq(st.st_size, 6);
	cr_expect_eq(st.st_mode & 07777, 0777, "symlink mode %o", st.st_mode & 07777);
	cr_expect_eq(st.st_nlink, 1);
	cr_expect_str_eq(read_all(at("s")), "data");
	/* A short buffer gets the first bytes, unterminated. */
	memset(buf, 'x', sizeof(buf));
	cr_expect_eq(readlink(at("s"), buf, 3), 3);
	cr_expect_eq(memcmp(buf, "tarx", 4), 0);
}

Test(dir, dangling_symlink_can_be_read_and_created_through)
{
	char buf[256];
	struct stat st;

	assert_ok(symlink("ghost", at("s")));
	assert_fails(stat(at("s"), &st), ENOENT);
	assert_ok(lstat(at("s"), &st));
	cr_expect_eq(readlink(at("s"), buf, sizeof(buf)), 5);
	assert_fails(open(at("s"), O_RDONLY), ENOENT);
	/* O_CREAT follows the link and creates its target. */
	int fd = open(at("s"), O_CREAT | O_WRONLY, 0640);
	cr_assert_geq(fd, 0, "create through dangling link: %s", strerror(errno));
	close(fd);
	st = stat_of(at("ghost"));
	cr_expect(S_ISREG(st.st_mode));
	cr_expect_eq(st.st_mode & 07777, 0640);
	cr_expect_str_eq(read_all(at("s")), "");
}

Test(dir, symlink_target_of_4095_bytes_works_and_4096_fails_with_enametoolong)
{
	static char target[4097], buf[4200];
	ssize_t n;

	memset(target, 'a', 4095);
	for (int i = 100; i < 4095; i += 100)
		target[i] = '/';
	target[4095] = 0;
	assert_ok(symlink(target, at("long")));
	n = readlink(at("long"), buf, sizeof(buf));
	cr_assert_eq(n, 4095, "readlink returned %zd", n);
	cr_expect_eq(memcmp(buf, target, 4095), 0);
	cr_expect_eq(stat_of(at("long")).st_size, 4095);
	target[4095] = 'b';
	target[4096] = 0;
	assert_fails(symlink(target, at("toolong")), ENAMETOOLONG);
	assert_fails(access(at("toolong"), F_OK), ENOENT);
}

Test(dir, symlink_onto_an_existing_name_fails_with_eexist)
{
	make_file(at("f"), "keep");
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(symlink("x", at("f")), EEXIST);
	assert_fails(symlink("x", at("d")), EEXIST);
	cr_expect_str_eq(read_all(at("f")), "keep");
}

Test(dir, symlink_loop_fails_with_eloop)
{
	assert_ok(symlink("b", at("a")));
	assert_ok(symlink("a", at("b")));
	assert_fails(open(at("a"), O_RDONLY), ELOOP);
	assert_ok(symlink("self", at("self")));
	assert_fails(open(at("self"), O_RDONLY), ELOOP);
}

Test(dir, readlink_of_a_non_symlink_fails_with_einval)
{
	char buf[16];

	make_file(at("f"), NULL);
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(readlink(at("f"), buf, sizeof(buf)), EINVAL);
	assert_fails(readlink(at("d"), buf, sizeof(buf)), EINVAL);
}

Test(dir, relative_symlink_resolves_from_its_own_directory)
{
	assert_ok(mkdir(at("a"), 0755));
	assert_ok(mkdir(at("a/b"), 0755));
	make_file(at("a/file"), "found");
	assert_ok(symlink("../file", at("a/b/up")));
	cr_expect_str_eq(read_all(at("a/b/up")), "found");
	assert_ok(symlink("a/b", at("dirlink")));
	cr_expect_str_eq(read_all(at("dirlink/up")), "found");
}

/* ---- rename ------------------------------------------------------------- */

Test(dir, rename_moves_a_file_and_keeps_its_inode)
{
	struct stat before;

	make_file(at("a"), "content");
	before = stat_of(at("a"));
	assert_ok(rename(at("a"), at("b")));
	assert_fails(access(at("a"), F_OK), ENOENT);
	cr_expect_eq(stat_of(at("b")).st_ino, before.st_ino);
	cr_expect_str_eq(read_all(at("b")), "content");
	assert_ok(mkdir(at("d"), 0755));
	assert_ok(rename(at("b"), at("d/c")));
	cr_expect_str_eq(read_all(at("d/c")), "content");
	cr_expect_eq(stat_of(at("d")).st_size, DIR_BASE_SIZE + DIR_ENTRY_SIZE);
	cr_expect_eq(stat_of(mnt.dir).st_size, DIR_BASE_SIZE + DIR_ENTRY_SIZE);
}

Test(dir, rename_over_an_existing_file_replaces_it)
{
	struct stat a;
	int fd;
	char buf[16] = { 0 };

	make_file(at("a"), "new");
	make_file(at("b"), "old");
	a = stat_of(at("a"));
	fd = open(at("b"), O_RDWR);
	cr_assert_geq(fd, 0);
	assert_ok(rename(at("a"), at("b")));
	assert_fails(access(at("a"), F_OK), ENOENT);
	cr_expect_eq(stat_of(at("b")).st_ino, a.st_ino);
	cr_expect_str_eq(read_all(at("b")), "new");
	/* The replaced file lives on, nameless, through the open descriptor. */
	struct stat old;
	assert_ok(fstat(fd, &old));
	cr_expect_eq(old.st_nlink, 0, "replaced file has nlink %lu", (unsigned long)old.st_nlink);
	cr_expect_eq(pread(fd, buf, sizeof(buf) - 1, 0), 3);
	cr_expect_str_eq(buf, "old");
	close(fd);
	cr_expect_eq(stat_of(mnt.dir).st_size, DIR_BASE_SIZE + DIR_ENTRY_SIZE);
}

Test(dir, rename_of_a_directory_over_an_empty_directory_replaces_it)
{
	struct stat src;

	assert_ok(mkdir(at("src"), 0755));
	make_file(at("src/inner"), "x");
	assert_ok(mkdir(at("p"), 0755));
	assert_ok(mkdir(at("p/dst"), 0755));
	src = stat_of(at("src"));
	cr_assert_eq(stat_of(mnt.dir).st_nlink, 4);
	assert_ok(rename(at("src"), at("p/dst")));
	cr_expect_eq(stat_of(at("p/dst")).st_ino, src.st_ino);
	cr_expect_str_eq(read_all(at("p/dst/inner")), "x");
	cr_expect_eq(stat_of(mnt.dir).st_nlink, 3, "root nlink %lu",
		     (unsigned long)stat_of(mnt.dir).st_nlink);
	cr_expect_eq(stat_of(at("p")).st_nlink, 3, "p nlink %lu",
		     (unsigned long)stat_of(at("p")).st_nlink);
	cr_expect_eq(stat_of(at("p/dst/..")).st_ino, stat_of(at("p")).st_ino);
}

Test(dir, rename_of_a_directory_over_a_non_empty_directory_fails_with_enotempty)
{
	assert_ok(mkdir(at("a"), 0755));
	assert_ok(mkdir(at("b"), 0755));
	make_file(at("b/keep"), "k");
	assert_fails(rename(at("a"), at("b")), ENOTEMPTY);
	cr_expect(S_ISDIR(stat_of(at("a")).st_mode));
	cr_expect_str_eq(read_all(at("b/keep")), "k");
	cr_expect_eq(stat_of(mnt.dir).st_nlink, 4);
}

Test(dir, rename_of_a_file_over_a_directory_fails_with_eisdir)
{
	make_file(at("f"), NULL);
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(rename(at("f"), at("d")), EISDIR);
	cr_expect(S_ISREG(stat_of(at("f")).st_mode));
	cr_expect(S_ISDIR(stat_of(at("d")).st_mode));
}

Test(dir, rename_of_a_directory_over_a_file_fails_with_enotdir)
{
	make_file(at("f"), NULL);
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(rename(at("d"), at("f")), ENOTDIR);
	cr_expect(S_ISREG(stat_of(at("f")).st_mode));
	cr_expect(S_ISDIR(stat_of(at("d")).st_mode));
}

Test(dir, rename_of_a_directory_into_its_own_subdirectory_fails_with_einval)
{
	assert_ok(mkdir(at("a"), 0755));
	assert_ok(mkdir(at("a/b"), 0755));
	assert_ok(mkdir(at("a/b/c"), 0755));
	assert_fails(rename(at("a"), at("a/b/c/a")), EINVAL);
	assert_fails(rename(at("a"), at("a/x")), EINVAL);
	cr_expect(S_ISDIR(stat_of(at("a/b/c")).st_mode));
}

Test(dir, rename_of_a_missing_source_fails_with_enoent)
{
	make_file(at("b"), "b");
	assert_fails(rename(at("missing"), at("b")), ENOENT);
	assert_fails(rename(at("missing"), at("new")), ENOENT);
	cr_expect_str_eq(read_all(at("b")), "b");
}

Test(dir, rename_of_a_directory_across_parents_moves_dotdot_and_nlinks)
{
	assert_ok(mkdir(at("p1"), 0755));
	assert_ok(mkdir(at("p2"), 0755));
	assert_ok(mkdir(at("p1/d"), 0755));
	assert_ok(rename(at("p1/d"), at("p2/d")));
	cr_expect_eq(stat_of(at("p1")).st_nlink, 2);
	cr_expect_eq(stat_of(at("p2")).st_nlink, 3);
	cr_expect_eq(stat_of(at("p2/d/..")).st_ino, stat_of(at("p2")).st_ino);
	cr_expect_eq(stat_of(at("p1")).st_size, DIR_BASE_SIZE);
	cr_expect_eq(stat_of(at("p2")).st_size, DIR_BASE_SIZE + DIR_ENTRY_SIZE);
	/* The old parent can now be removed, the new one cannot. */
	assert_ok(rmdir(at("p1")));
	assert_fails(rmdir(at("p2")), ENOTEMPTY);
}

Test(dir, rename_noreplace_onto_an_existing_name_fails_with_eexist)
{
	make_file(at("a"), "a");
	make_file(at("b"), "b");
	assert_fails(renameat2(AT_FDCWD, at("a"), AT_FDCWD, at("b"), RENAME_NOREPLACE), EEXIST);
	cr_expect_str_eq(read_all(at("a")), "a");
	cr_expect_str_eq(read_all(at("b")), "b");
}

Test(dir, rename_noreplace_to_a_free_name_succeeds)
{
	make_file(at("a"), "a");
	assert_ok(renameat2(AT_FDCWD, at("a"), AT_FDCWD, at("c"), RENAME_NOREPLACE));
	assert_fails(access(at("a"), F_OK), ENOENT);
	cr_expect_str_eq(read_all(at("c")), "a");
}

Test(dir, rename_exchange_swaps_two_files)
{
	struct stat a, b;

	make_file(at("a"), "aaa");
	make_file(at("b"), "bb");
	a = stat_of(at("a"));
	b = stat_of(at("b"));
	assert_ok(renameat2(AT_FDCWD, at("a"), AT_FDCWD, at("b"), RENAME_EXCHANGE));
	cr_expect_eq(stat_of(at("a")).st_ino, b.st_ino);
	cr_expect_eq(stat_of(at("b")).st_ino, a.st_ino);
	cr_expect_str_eq(read_all(at("a")), "bb");
	cr_expect_str_eq(read_all(at("b")), "aaa");
}

Test(dir, rename_exchange_swaps_a_file_and_a_directory_across_directories)
{
	struct stat f, d;

	assert_ok(mkdir(at("p1"), 0755));
	assert_ok(mkdir(at("p2"), 0755));
	make_file(at("p1/x"), "file");
	assert_ok(mkdir(at("p2/y"), 0755));
	make_file(at("p2/y/inside"), "in");
	f = stat_of(at("p1/x"));
	d = stat_of(at("p2/y"));
	cr_assert_eq(stat_of(at("p1")).st_nlink, 2);
	cr_assert_eq(stat_of(at("p2")).st_nlink, 3);
	assert_ok(renameat2(AT_FDCWD, at("p1/x"), AT_FDCWD, at("p2/y"), RENAME_EXCHANGE));
	cr_expect_eq(stat_of(at("p1/x")).st_ino, d.st_ino);
	cr_expect(S_ISDIR(stat_of(at("p1/x")).st_mode));
	cr_expect_eq(stat_of(at("p2/y")).st_ino, f.st_ino);
	cr_expect(S_ISREG(stat_of(at("p2/y")).st_mode));
	cr_expect_str_eq(read_all(at("p1/x/inside")), "in");
	cr_expect_str_eq(read_all(at("p2/y")), "file");
	cr_expect_eq(stat_of(at("p1")).st_nlink, 3, "p1 nlink %lu",
		     (unsigned long)stat_of(at("p1")).st_nlink);
	cr_expect_eq(stat_of(at("p2")).st_nlink, 2, "p2 nlink %lu",
		     (unsigned long)stat_of(at("p2")).st_nlink);
	cr_expect_eq(stat_of(at("p1/x/..")).st_ino, stat_of(at("p1")).st_ino);
	/* p2 is now removable once its file is gone, p1 is not. */
	assert_ok(unlink(at("p2/y")));
	assert_ok(rmdir(at("p2")));
	assert_fails(rmdir(at("p1")), ENOTEMPTY);
}

Test(dir, rename_exchange_with_a_missing_target_fails_with_enoent)
{
	make_file(at("a"), "a");
	assert_fails(renameat2(AT_FDCWD, at("a"), AT_FDCWD, at("b"), RENAME_EXCHANGE), ENOENT);
	cr_expect_str_eq(read_all(at("a")), "a");
}

Test(dir, rename_exchange_together_with_noreplace_fails_with_einval)
{
	make_file(at("a"), "a");
	make_file(at("b"), "b");
	assert_fails(renameat2(AT_FDCWD, at("a"), AT_FDCWD, at("b"),
			       RENAME_EXCHANGE | RENAME_NOREPLACE),
		     EINVAL);
}

Test(dir, rename_whiteout_fails_with_einval)
{
	make_file(at("a"), "a");
	assert_fails(renameat2(AT_FDCWD, at("a"), AT_FDCWD, at("b"), RENAME_WHITEOUT), EINVAL);
	cr_expect_str_eq(read_all(at("a")), "a");
	assert_fails(access(at("b"), F_OK), ENOENT);
}

Test(dir, rename_of_a_hard_link_onto_another_link_of_the_same_inode_is_a_no_op)
{
	make_file(at("a"), "same");
	assert_ok(link(at("a"), at("b")));
	assert_ok(rename(at("a"), at("b")));
	/* POSIX: both names stay. */
	cr_expect_str_eq(read_all(at("a")), "same");
	cr_expect_str_eq(read_all(at("b")), "same");
	cr_expect_eq(stat_of(at("a")).st_nlink, 2);
	cr_expect_eq(stat_of(mnt.dir).st_size, DIR_BASE_SIZE + 2 * DIR_ENTRY_SIZE);
}

Test(dir, rename_of_a_name_onto_itself_succeeds_and_changes_nothing)
{
	make_file(at("a"), "x");
	assert_ok(rename(at("a"), at("a")));
	cr_expect_str_eq(read_all(at("a")), "x");
	assert_ok(mkdir(at("d"), 0755));
	assert_ok(rename(at("d"), at("d")));
	cr_expect(S_ISDIR(stat_of(at("d")).st_mode));
}

/* ---- unlink of open files ----------------------------------------------- */

Test(dir, unlinked_open_file_stays_readable_and_writable_through_its_fd)
{
	char buf[256] = { 0 };
	struct stat st;
	int fd;

	fd = open(at("f"), O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "before ", 7), 7);
	assert_ok(unlink(at("f")));
	assert_fails(access(at("f"), F_OK), ENOENT);
	assert_ok(fstat(fd, &st));
	cr_expect_eq(st.st_nlink, 0, "nlink %lu after unlink", (unsigned long)st.st_nlink);
	cr_expect_eq(st.st_size, 7);
	cr_assert_eq(pwrite(fd, "after", 5, 7), 5);
	cr_assert_eq(pread(fd, buf, sizeof(buf) - 1, 0), 12);
	cr_expect_str_eq(buf, "before after");
	assert_ok(ftruncate(fd, 3));
	assert_ok(fstat(fd, &st));
	cr_expect_eq(st.st_size, 3);
	/* The name is free for a new, unrelated file. */
	make_file(at("f"), "fresh");
	cr_expect_neq(stat_of(at("f")).st_ino, st.st_ino);
	memset(buf, 0, sizeof(buf));
	cr_expect_eq(pread(fd, buf, sizeof(buf) - 1, 0), 3);
	cr_expect_str_eq(buf, "bef");
	close(fd);
	cr_expect_str_eq(read_all(at("f")), "fresh");
}

Test(dir, unlinked_directory_with_an_open_fd_reads_as_empty)
{
	int fd;
	struct stat st;

	assert_ok(mkdir(at("d"), 0755));
	fd = open(at("d"), O_RDONLY | O_DIRECTORY);
	cr_assert_geq(fd, 0);
	assert_ok(rmdir(at("d")));
	assert_ok(fstat(fd, &st));
	cr_expect_eq(st.st_nlink, 0, "removed directory has nlink %lu",
		     (unsigned long)st.st_nlink);
	/* Nothing can be created in a removed directory. */
	assert_fails(openat(fd, "x", O_CREAT | O_WRONLY, 0644), ENOENT);
	close(fd);
}

/* ---- mknod -------------------------------------------------------------- */

struct node_case {
	mode_t mode;
	unsigned major, minor;
};

static struct node_case node_cases[] = {
	{ S_IFIFO | 0640, 0, 0 },
	{ S_IFSOCK | 0755, 0, 0 },
	{ S_IFCHR | 0600, 1, 3 },
	{ S_IFCHR | 0666, 4095, 1048575 },
	{ S_IFBLK | 0660, 7, 0 },
	{ S_IFREG | 0604, 0, 0 },
};

ParameterizedTestParameters(dir, mknod_creates_the_node_with_its_mode_and_rdev)
{
	return cr_make_param_array(struct node_case, node_cases,
				   sizeof(node_cases) / sizeof(node_cases[0]));
}

ParameterizedTest(struct node_case *c, dir, mknod_creates_the_node_with_its_mode_and_rdev)
{
	dev_t dev = makedev(c->major, c->minor);
	struct stat st;

	assert_ok(mknod(at("node"), c->mode, dev));
	st = stat_of(at("node"));
	cr_expect_eq(st.st_mode, c->mode, "st_mode %o, want %o", st.st_mode, c->mode);
	if (S_ISCHR(c->mode) || S_ISBLK(c->mode))
		cr_expect_eq(st.st_rdev, dev, "st_rdev %u:%u, want %u:%u", major(st.st_rdev),
			     minor(st.st_rdev), c->major, c->minor);
	else
		cr_expect_eq(st.st_rdev, 0, "st_rdev %u:%u on a non-device",
			     major(st.st_rdev), minor(st.st_rdev));
	cr_expect_eq(st.st_nlink, 1);
	cr_expect_eq(st.st_size, 0);
	assert_fails(mknod(at("node"), c->mode, dev), EEXIST);
	assert_ok(unlink(at("node")));
	assert_fails(access(at("node"), F_OK), ENOENT);
}

Test(dir, fifo_made_with_mknod_carries_data_between_two_opens)
{
	int r, w;
	char buf[8] = { 0 };

	assert_ok(mkfifo(at("fifo"), 0600));
	r = open(at("fifo"), O_RDONLY | O_NONBLOCK);
	cr_assert_geq(r, 0, "open fifo for reading: %s", strerror(errno));
	w = open(at("fifo"), O_WRONLY | O_NONBLOCK);
	cr_assert_geq(w, 0, "open fifo for writing: %s", strerror(errno));
	cr_assert_eq(write(w, "pipe", 4), 4);
	cr_expect_eq(read(r, buf, sizeof(buf)), 4);
	cr_expect_str_eq(buf, "pipe");
	close(w);
	close(r);
}

/* ---- name length -------------------------------------------------------- */

enum name_op { OP_CREATE, OP_MKDIR, OP_MKNOD, OP_LINK, OP_RENAME, OP_SYMLINK, OP_LOOKUP };

static const char *const name_op_names[] = { "create", "mkdir", "mknod", "link",
					     "rename", "symlink", "lookup" };

static enum name_op name_ops[] = { OP_CREATE, OP_MKDIR,   OP_MKNOD, OP_LINK,
				   OP_RENAME, OP_SYMLINK, OP_LOOKUP };

/* Apply op to a name of len bytes; -1 with errno on failure. */
static int name_op_apply(enum name_op op, size_t len)
{
	char name[300];
	const char *path;
	struct stat st;
	int fd;

	memset(name, 'n', len);
	name[len] = 0;
	path = at("%s", name);
	make_file(at("src"), "src");
	switch (op) {
	case OP_CREATE:
		fd = open(path, O_CREAT | O_WRONLY, 0644);
		if (fd >= 0)
			close(fd);
		return fd < 0 ? -1 : 0;
	case OP_MKDIR:
		return mkdir(path, 0755);
	case OP_MKNOD:
		return mknod(path, S_IFIFO | 0644, 0);
	case OP_LINK:
		return link(at("src"), path);
	case OP_RENAME:
		return rename(at("src"), path);
	case OP_SYMLINK:
		return symlink("src", path);
	case OP_LOOKUP:
		/* A lookup of a long name that does not exist. */
		return stat(path, &st) < 0 && errno == ENOENT ? 0 : -1;
	}
	return -1;
}

ParameterizedTestParameters(dir, name_of_256_bytes_fails_with_enametoolong)
{
	return cr_make_param_array(enum name_op, name_ops, sizeof(name_ops) / sizeof(name_ops[0]));
}

ParameterizedTest(enum name_op *op, dir, name_of_256_bytes_fails_with_enametoolong)
{
	struct stat st;

	if (*op == OP_LOOKUP) {
		char name[257];

		memset(name, 'n', 256);
		name[256] = 0;
		assert_fails(stat(at("%s", name), &st), ENAMETOOLONG);
		assert_fails(open(at("%s", name), O_RDONLY), ENAMETOOLONG);
		return;
	}
	errno = 0;
	int r = name_op_apply(*op, 256);
	int e = errno;
	cr_expect_eq(r, -1, "%s of a 256-byte name succeeded", name_op_names[*op]);
	cr_expect_eq(e, ENAMETOOLONG, "%s of a 256-byte name: %s", name_op_names[*op],
		     strerrorname_np(e));
	/* Nothing appeared in the directory besides the source file. */
	struct listing l = list_dir(mnt.dir);
	cr_expect_eq(l.n, 1, "%zu entries after a failed %s", l.n, name_op_names[*op]);
	listing_free(&l);
	cr_expect_str_eq(read_all(at("src")), "src");
}

ParameterizedTestParameters(dir, name_of_255_bytes_works)
{
	return cr_make_param_array(enum name_op, name_ops, sizeof(name_ops) / sizeof(name_ops[0]));
}

ParameterizedTest(enum name_op *op, dir, name_of_255_bytes_works)
{
	char name[256];
	struct listing l;
	int found = 0;

	errno = 0;
	cr_assert_eq(name_op_apply(*op, 255), 0, "%s of a 255-byte name: %s",
		     name_op_names[*op], strerrorname_np(errno));
	if (*op == OP_LOOKUP)
		return;
	memset(name, 'n', 255);
	name[255] = 0;
	assert_ok(lstat(at("%s", name), &(struct stat){ 0 }));
	l = list_dir(mnt.dir);
	for (size_t i = 0; i < l.n; i++)
		found += !strcmp(l.names[i], name);
	cr_expect_eq(found, 1, "readdir shows the 255-byte name %d times", found);
	listing_free(&l);
}

/* ---- path resolution errors --------------------------------------------- */

ParameterizedTestParameters(dir, operation_under_a_missing_parent_fails_with_enoent)
{
	return cr_make_param_array(enum name_op, name_ops, sizeof(name_ops) / sizeof(name_ops[0]));
}

ParameterizedTest(enum name_op *op, dir, operation_under_a_missing_parent_fails_with_enoent)
{
	const char *path = at("missing/x");
	struct stat st;
	int r, fd;

	make_file(at("src"), "src");
	errno = 0;
	switch (*op) {
	case OP_CREATE:
		fd = open(path, O_CREAT | O_WRONLY, 0644);
		r = fd < 0 ? -1 : close(fd);
		break;
	case OP_MKDIR:
		r = mkdir(path, 0755);
		break;
	case OP_MKNOD:
		r = mknod(path, S_IFIFO | 0644, 0);
		break;
	case OP_LINK:
		r = link(at("src"), path);
		break;
	case OP_RENAME:
		r = rename(at("src"), path);
		break;
	case OP_SYMLINK:
		r = symlink("src", path);
		break;
	default:
		r = stat(path, &st);
		break;
	}
	int e = errno;
	cr_expect_eq(r, -1, "%s under a missing parent succeeded", name_op_names[*op]);
	cr_expect_eq(e, ENOENT, "%s: %s", name_op_names[*op], strerrorname_np(e));
	cr_expect_str_eq(read_all(at("src")), "src");
}

Test(dir, regular_file_used_as_a_directory_component_fails_with_enotdir)
{
	struct stat st;

	make_file(at("f"), NULL);
	assert_fails(stat(at("f/x"), &st), ENOTDIR);
	assert_fails(open(at("f/x"), O_CREAT | O_WRONLY, 0644), ENOTDIR);
	assert_fails(mkdir(at("f/x"), 0755), ENOTDIR);
	assert_fails(symlink("f", at("f/x")), ENOTDIR);
	assert_fails(rename(at("f"), at("f/x")), ENOTDIR);
	assert_fails(open(at("f/"), O_RDONLY), ENOTDIR);
	assert_fails(opendir(at("f")) ? 0 : -1, ENOTDIR);
}

Test(dir, open_with_o_excl_on_an_existing_name_fails_with_eexist)
{
	make_file(at("f"), "keep");
	assert_ok(mkdir(at("d"), 0755));
	assert_ok(symlink("ghost", at("dangling")));
	assert_fails(open(at("f"), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
	assert_fails(open(at("d"), O_CREAT | O_EXCL | O_RDONLY, 0644), EEXIST);
	/* O_EXCL does not follow symlinks, even dangling ones. */
	assert_fails(open(at("dangling"), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
	assert_fails(access(at("ghost"), F_OK), ENOENT);
	cr_expect_str_eq(read_all(at("f")), "keep");
}

Test(dir, open_with_o_directory_on_a_file_fails_with_enotdir)
{
	make_file(at("f"), NULL);
	assert_ok(symlink("f", at("s")));
	assert_fails(open(at("f"), O_RDONLY | O_DIRECTORY), ENOTDIR);
	assert_fails(open(at("s"), O_RDONLY | O_DIRECTORY), ENOTDIR);
	assert_ok(mkdir(at("d"), 0755));
	int fd = open(at("d"), O_RDONLY | O_DIRECTORY);
	cr_expect_geq(fd, 0);
	close(fd);
}

Test(dir, open_of_a_directory_for_writing_fails_with_eisdir)
{
	assert_ok(mkdir(at("d"), 0755));
	assert_fails(open(at("d"), O_WRONLY), EISDIR);
	assert_fails(open(at("d"), O_RDWR), EISDIR);
	assert_fails(open(at("d"), O_CREAT | O_WRONLY, 0644), EISDIR);
	assert_fails(open(mnt.dir, O_RDWR), EISDIR);
}

Test(dir, read_of_a_directory_fd_fails_with_eisdir)
{
	char buf[16];
	int fd;

	assert_ok(mkdir(at("d"), 0755));
	fd = open(at("d"), O_RDONLY);
	cr_assert_geq(fd, 0);
	assert_fails(read(fd, buf, sizeof(buf)), EISDIR);
	close(fd);
}

/* ---- a deep tree -------------------------------------------------------- */

static int tree_dirs, tree_files;

static int count_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag == FTW_D || flag == FTW_DP)
		tree_dirs++;
	else if (flag == FTW_F && S_ISREG(st->st_mode))
		tree_files++;
	else
		return -1;
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (ftw->level == 0)
		return 0;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

Test(dir, deep_tree_of_depth_100_is_created_walked_and_removed_with_nftw)
{
	enum { DEPTH = 100 };
	static char path[PATH_MAX];
	size_t len;

	assert_ok(mkdir(at("top"), 0755));
	len = (size_t)snprintf(path, sizeof(path), "%s", at("top"));
	for (int i = 0; i < DEPTH; i++) {
		len += (size_t)snprintf(path + len, sizeof(path) - len, "/lvl%03d", i);
		cr_assert_lt(len + 16, sizeof(path));
		cr_assert_eq(mkdir(path, 0755), 0, "mkdir level %d: %s", i, strerror(errno));
		char file[PATH_MAX + 16];
		snprintf(file, sizeof(file), "%s/file", path);
		make_file(file, "leaf");
	}
	snprintf(path + len, sizeof(path) - len, "/file");
	cr_expect_str_eq(read_all(path), "leaf");

	tree_dirs = tree_files = 0;
	cr_assert_eq(nftw(at("top"), count_entry, 16, FTW_PHYS), 0, "nftw walk: %s",
		     strerror(errno));
	cr_expect_eq(tree_dirs, DEPTH + 1, "nftw saw %d directories", tree_dirs);
	cr_expect_eq(tree_files, DEPTH, "nftw saw %d files", tree_files);

	cr_assert_eq(nftw(at("top"), remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0,
		     "nftw remove: %s", strerror(errno));
	struct listing l = list_dir(at("top"));
	cr_expect_eq(l.n, 0, "%zu entries left in the top directory", l.n);
	listing_free(&l);
	cr_expect_eq(stat_of(at("top")).st_nlink, 2);
	cr_expect_eq(stat_of(at("top")).st_size, DIR_BASE_SIZE);
	assert_ok(rmdir(at("top")));
}
