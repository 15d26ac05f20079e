/* SPDX-License-Identifier: MIT */
/*
 * test_attr.c - inode attributes: chmod, chown, utimensat, the timestamps
 * every operation touches, permission checks for an unprivileged user, the
 * sticky and setgid directory bits, the umask and access(2).  tmpfs is the
 * reference.  Permission tests fork a child that drops to uid/gid 65534.
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
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void attr_setup(void)
{
	umask(0);
	mnt_setup();
	/* The unprivileged child must be able to reach into the mount. */
	cr_assert_eq(chmod(mnt.dir, 0755), 0, "chmod of the mount root: %s", strerror(errno));
}

TestSuite(attr, .init = attr_setup, .fini = mnt_teardown);

/*
 * Like make_file, but the file ends with exactly mode, special bits included,
 * even if it existed before (O_TRUNC keeps an existing file's mode).
 */
static void make_file_mode(const char *path, mode_t mode, const char *content)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);

	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	if (content)
		cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	cr_assert_eq(chmod(path, mode), 0);
}

/* ---- running as another user -------------------------------------------- */

static int try_read(const char *p)
{
	int fd = open(p, O_RDONLY);
	return fd < 0 ? -1 : close(fd);
}

static int try_write(const char *p)
{
	int fd = open(p, O_WRONLY);
	return fd < 0 ? -1 : close(fd);
}

static int try_create(const char *p)
{
	int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
	return fd < 0 ? -1 : close(fd);
}

static int try_mkdir(const char *p)
{
	return mkdir(p, 0755);
}

static int try_stat(const char *p)
{
	struct stat st;
	return stat(p, &st);
}

static int try_opendir(const char *p)
{
	DIR *d = opendir(p);
	return d ? closedir(d) : -1;
}

static int try_unlink(const char *p)
{
	return unlink(p);
}

static int try_rename_away(const char *p)
{
	char to[PATH_MAX];

	snprintf(to, sizeof(to), "%s.moved", p);
	return rename(p, to);
}

static int try_chown_to_self(const char *p)
{
	return chown(p, NOBODY, (gid_t)-1);
}

static int try_chown_to_root(const char *p)
{
	return chown(p, 0, (gid_t)-1);
}

static int try_chgrp_to_root(const char *p)
{
	return chown(p, (uid_t)-1, 0);
}

static int try_chgrp_to_own_group(const char *p)
{
	return chown(p, (uid_t)-1, NOBODY);
}

static int try_chmod(const char *p)
{
	return chmod(p, 0777);
}

static int try_chmod_setgid(const char *p)
{
	return chmod(p, 02755);
}

static int try_utimens_explicit(const char *p)
{
	struct timespec ts[2] = { { 1000, 0 }, { 1000, 0 } };
	return utimensat(AT_FDCWD, p, ts, 0);
}

static int try_utimens_now(const char *p)
{
	return utimensat(AT_FDCWD, p, NULL, 0);
}

static int try_access_r(const char *p)
{
	return access(p, R_OK);
}

static int try_access_w(const char *p)
{
	return access(p, W_OK);
}

static int try_access_x(const char *p)
{
	return access(p, X_OK);
}

static int try_append(const char *p)
{
	int fd = open(p, O_WRONLY | O_APPEND);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, "x", 1);
	close(fd);
	return n == 1 ? 0 : -1;
}

/* ---- chmod and chown ---------------------------------------------------- */

Test(attr, chmod_sets_the_permission_bits_and_keeps_the_file_type)
{
	static const mode_t modes[] = { 0, 0640, 0777, 04755, 02710, 01644, 07777 };

	make_file_mode(at("f"), 0644, NULL);
	cr_assert_eq(mkdir(at("d"), 0755), 0);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		assert_ok(chmod(at("f"), modes[i]));
		assert_ok(chmod(at("d"), modes[i]));
		cr_expect_eq(stat_of(at("f")).st_mode, S_IFREG | modes[i], "file mode %o, want %o",
			     stat_of(at("f")).st_mode, S_IFREG | modes[i]);
		cr_expect_eq(stat_of(at("d")).st_mode, S_IFDIR | modes[i], "dir mode %o, want %o",
			     stat_of(at("d")).st_mode, S_IFDIR | modes[i]);
	}
}

Test(attr, fchmod_through_an_open_fd_sets_the_mode)
{
	int fd = open(at("f"), O_CREAT | O_RDWR, 0600);
	struct stat st;

	cr_assert_geq(fd, 0);
	assert_ok(fchmod(fd, 0604));
	assert_ok(fstat(fd, &st));
	cr_expect_eq(st.st_mode & 07777, 0604);
	close(fd);
	cr_expect_eq(stat_of(at("f")).st_mode & 07777, 0604);
}

Test(attr, chmod_by_a_user_who_does_not_own_the_file_fails_with_eperm)
{
	make_file_mode(at("f"), 0666, NULL);
	assert_nobody_gets(try_chmod, at("f"), EPERM);
	cr_expect_eq(stat_of(at("f")).st_mode & 07777, 0666);
}

Test(attr, chown_as_root_changes_owner_and_group)
{
	struct stat st;

	make_file_mode(at("f"), 0644, NULL);
	assert_ok(chown(at("f"), 1000, 2000));
	st = stat_of(at("f"));
	cr_expect_eq(st.st_uid, 1000);
	cr_expect_eq(st.st_gid, 2000);
	assert_ok(chown(at("f"), (uid_t)-1, 3000));
	st = stat_of(at("f"));
	cr_expect_eq(st.st_uid, 1000);
	cr_expect_eq(st.st_gid, 3000);
	assert_ok(chown(at("f"), 4000, (gid_t)-1));
	st = stat_of(at("f"));
	cr_expect_eq(st.st_uid, 4000);
	cr_expect_eq(st.st_gid, 3000);
	/* lchown changes a symlink, not its target. */
	assert_ok(symlink("f", at("s")));
	assert_ok(lchown(at("s"), 5000, 6000));
	cr_expect_eq(stat_of(at("s")).st_uid, 5000);
	cr_expect_eq(stat_of(at("s")).st_gid, 6000);
	cr_expect_eq(stat_of(at("f")).st_uid, 4000);
}

Test(attr, chown_by_an_unprivileged_user_fails_with_eperm)
{
	make_file_mode(at("root-file"), 0666, NULL);
	assert_nobody_gets(try_chown_to_self, at("root-file"), EPERM);
	assert_nobody_gets(try_chgrp_to_own_group, at("root-file"), EPERM);
	cr_expect_eq(stat_of(at("root-file")).st_uid, 0);
	cr_expect_eq(stat_of(at("root-file")).st_gid, 0);

	/* Owning the file is not enough to give it away or join a foreign group. */
	make_file_mode(at("own-file"), 0644, NULL);
	assert_ok(chown(at("own-file"), NOBODY, 0));
	assert_nobody_gets(try_chown_to_root, at("own-file"), EPERM);
	assert_nobody_gets(try_chgrp_to_root, at("own-file"), 0); /* unchanged gid: allowed */
	assert_nobody_gets(try_chgrp_to_own_group, at("own-file"), 0);
	cr_expect_eq(stat_of(at("own-file")).st_uid, NOBODY);
	cr_expect_eq(stat_of(at("own-file")).st_gid, NOBODY);
	assert_nobody_gets(try_chgrp_to_root, at("own-file"), EPERM);
	cr_expect_eq(stat_of(at("own-file")).st_gid, NOBODY);
}

Test(attr, chown_clears_the_setuid_and_group_executable_setgid_bits)
{
	make_file_mode(at("f"), 0644, NULL);
	assert_ok(chmod(at("f"), 06755));
	assert_ok(chown(at("f"), 1000, 1000));
	cr_expect_eq(stat_of(at("f")).st_mode & 07777, 0755, "mode %o after chown",
		     stat_of(at("f")).st_mode & 07777);
	/* Without group execute, setgid means mandatory locking and stays. */
	make_file_mode(at("g"), 0644, NULL);
	assert_ok(chmod(at("g"), 02644));
	assert_ok(chown(at("g"), 1000, 1000));
	cr_expect_eq(stat_of(at("g")).st_mode & 07777, 02644, "mode %o after chown",
		     stat_of(at("g")).st_mode & 07777);
}

Test(attr, chmod_of_setgid_by_an_owner_outside_the_group_drops_the_bit)
{
	make_file_mode(at("f"), 0644, NULL);
	assert_ok(chown(at("f"), NOBODY, 0));
	assert_nobody_gets(try_chmod_setgid, at("f"), 0);
	cr_expect_eq(stat_of(at("f")).st_mode & 07777, 0755, "mode %o",
		     stat_of(at("f")).st_mode & 07777);
}

Test(attr, write_by_another_user_clears_the_setuid_bit)
{
	make_file_mode(at("f"), 0666, "data");
	assert_ok(chmod(at("f"), 04766));
	assert_nobody_gets(try_append, at("f"), 0);
	cr_expect_eq(stat_of(at("f")).st_size, 5);
	cr_expect_eq(stat_of(at("f")).st_mode & 07777, 0766, "mode %o after write",
		     stat_of(at("f")).st_mode & 07777);
}

/* ---- times -------------------------------------------------------------- */

/* A lower bound for any timestamp set from now on, by a kernel clock or ours. */
static struct timespec now_floor(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return ts;
}

static struct timespec now_ceil(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 1; /* a daemon clock may be a little ahead of ours */
	return ts;
}

#define OLD_A ((struct timespec){ 1000000000, 111111111 })
#define OLD_M ((struct timespec){ 1100000000, 222222222 })

static void set_old_times(const char *path)
{
	struct timespec ts[2] = { OLD_A, OLD_M };

	cr_assert_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0, "utimensat %s: %s",
		     path, strerror(errno));
}

#define expect_ts_eq(a, b, what)                                                         \
	cr_expect_eq(ts_cmp(a, b), 0, "%s: %lld.%09ld, want %lld.%09ld", what,            \
		     (long long)(a).tv_sec, (a).tv_nsec, (long long)(b).tv_sec, (b).tv_nsec)
#define expect_ts_geq(a, b, what)                                                        \
	cr_expect_geq(ts_cmp(a, b), 0, "%s: %lld.%09ld is before %lld.%09ld", what,       \
		      (long long)(a).tv_sec, (a).tv_nsec, (long long)(b).tv_sec, (b).tv_nsec)
#define expect_ts_leq(a, b, what)                                                        \
	cr_expect_leq(ts_cmp(a, b), 0, "%s: %lld.%09ld is after %lld.%09ld", what,        \
		      (long long)(a).tv_sec, (a).tv_nsec, (long long)(b).tv_sec, (b).tv_nsec)

Test(attr, utimensat_sets_explicit_times_with_nanoseconds)
{
	struct timespec ts[2] = { { 1000000000, 123456789 }, { 1234567890, 987654321 } };
	struct timespec t0;
	struct stat st;

	make_file_mode(at("f"), 0644, NULL);
	t0 = now_floor();
	assert_ok(utimensat(AT_FDCWD, at("f"), ts, 0));
	st = stat_of(at("f"));
	expect_ts_eq(st.st_atim, ts[0], "atime");
	expect_ts_eq(st.st_mtim, ts[1], "mtime");
	expect_ts_geq(st.st_ctim, t0, "ctime");
	expect_ts_leq(st.st_ctim, now_ceil(), "ctime");

	/* Far in the future, and nanosecond 0 and 999999999. */
	struct timespec far[2] = { { 4102444800LL, 0 }, { 4102444800LL, 999999999 } };
	assert_ok(utimensat(AT_FDCWD, at("f"), far, 0));
	st = stat_of(at("f"));
	expect_ts_eq(st.st_atim, far[0], "far atime");
	expect_ts_eq(st.st_mtim, far[1], "far mtime");
}

Test(attr, utimensat_with_utime_now_sets_the_current_time)
{
	struct timespec now[2] = { { 0, UTIME_NOW }, { 0, UTIME_NOW } };
	struct timespec t0;
	struct stat st;

	make_file_mode(at("f"), 0644, NULL);
	set_old_times(at("f"));
	t0 = now_floor();
	assert_ok(utimensat(AT_FDCWD, at("f"), now, 0));
	st = stat_of(at("f"));
	expect_ts_geq(st.st_atim, t0, "atime");
	expect_ts_geq(st.st_mtim, t0, "mtime");
	expect_ts_geq(st.st_ctim, t0, "ctime");
	expect_ts_leq(st.st_mtim, now_ceil(), "mtime");

	/* A NULL times array means both UTIME_NOW. */
	set_old_times(at("f"));
	t0 = now_floor();
	assert_ok(utimensat(AT_FDCWD, at("f"), NULL, 0));
	st = stat_of(at("f"));
	expect_ts_geq(st.st_atim, t0, "atime (NULL times)");
	expect_ts_geq(st.st_mtim, t0, "mtime (NULL times)");
}

Test(attr, utimensat_with_utime_omit_leaves_that_time_alone)
{
	struct timespec a_only[2] = { { 1300000000, 5 }, { 0, UTIME_OMIT } };
	struct timespec m_only[2] = { { 0, UTIME_OMIT }, { 1400000000, 6 } };
	struct timespec now_m[2] = { { 0, UTIME_OMIT }, { 0, UTIME_NOW } };
	struct timespec t0;
	struct stat st;

	make_file_mode(at("f"), 0644, NULL);
	set_old_times(at("f"));
	assert_ok(utimensat(AT_FDCWD, at("f"), a_only, 0));
	st = stat_of(at("f"));
	expect_ts_eq(st.st_atim, a_only[0], "atime");
	expect_ts_eq(st.st_mtim, OLD_M, "omitted mtime");

	assert_ok(utimensat(AT_FDCWD, at("f"), m_only, 0));
	st = stat_of(at("f"));
	expect_ts_eq(st.st_atim, a_only[0], "omitted atime");
	expect_ts_eq(st.st_mtim, m_only[1], "mtime");

	t0 = now_floor();
	assert_ok(utimensat(AT_FDCWD, at("f"), now_m, 0));
	st = stat_of(at("f"));
	expect_ts_eq(st.st_atim, a_only[0], "omitted atime");
	expect_ts_geq(st.st_mtim, t0, "mtime set to now");
}

Test(attr, utimensat_with_both_times_omitted_changes_nothing)
{
	struct timespec omit[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };
	struct stat before, after;

	make_file_mode(at("f"), 0644, NULL);
	set_old_times(at("f"));
	before = stat_of(at("f"));
	let_time_pass();
	assert_ok(utimensat(AT_FDCWD, at("f"), omit, 0));
	after = stat_of(at("f"));
	expect_ts_eq(after.st_atim, OLD_A, "atime");
	expect_ts_eq(after.st_mtim, OLD_M, "mtime");
	expect_ts_eq(after.st_ctim, before.st_ctim, "ctime");
}

Test(attr, utimensat_advances_ctime)
{
	struct timespec ts[2] = { { 1000, 0 }, { 2000, 0 } };
	struct stat before, after;
	struct timespec t0;

	make_file_mode(at("f"), 0644, NULL);
	before = stat_of(at("f"));
	let_time_pass();
	t0 = now_floor();
	assert_ok(utimensat(AT_FDCWD, at("f"), ts, 0));
	after = stat_of(at("f"));
	cr_expect_gt(ts_cmp(after.st_ctim, before.st_ctim), 0, "ctime did not advance");
	expect_ts_geq(after.st_ctim, t0, "ctime");
}

Test(attr, futimens_and_nofollow_utimensat_set_times_of_the_object_itself)
{
	struct timespec ts[2] = { { 1500000000, 1 }, { 1500000001, 2 } };
	struct timespec ls[2] = { { 1600000000, 3 }, { 1600000001, 4 } };
	struct stat st;
	int fd;

	make_file_mode(at("f"), 0644, NULL);
	fd = open(at("f"), O_RDONLY);
	cr_assert_geq(fd, 0);
	assert_ok(futimens(fd, ts));
	close(fd);
	st = stat_of(at("f"));
	expect_ts_eq(st.st_atim, ts[0], "atime via futimens");
	expect_ts_eq(st.st_mtim, ts[1], "mtime via futimens");

	assert_ok(symlink("f", at("s")));
	assert_ok(utimensat(AT_FDCWD, at("s"), ls, AT_SYMLINK_NOFOLLOW));
	st = stat_of(at("s"));
	expect_ts_eq(st.st_mtim, ls[1], "symlink mtime");
	st = stat_of(at("f"));
	expect_ts_eq(st.st_mtim, ts[1], "target mtime untouched");
}

Test(attr, utimensat_by_a_non_owner_needs_ownership_or_write_access)
{
	make_file_mode(at("ro"), 0644, NULL);
	make_file_mode(at("rw"), 0666, NULL);
	/* Explicit times: only the owner. */
	assert_nobody_gets(try_utimens_explicit, at("rw"), EPERM);
	assert_nobody_gets(try_utimens_explicit, at("ro"), EPERM);
	/* "Now": anyone who may write. */
	assert_nobody_gets(try_utimens_now, at("rw"), 0);
	assert_nobody_gets(try_utimens_now, at("ro"), EACCES);
}

/*
 * What each operation does to the times of the inode it acts on (target)
 * and of the directories it changes (parent, parent2), as tmpfs does it.
 */
enum {
	T_A = 1, T_M = 2, T_C = 4,       /* target's atime, mtime, ctime change */
	T_NEW = 8,                       /* target is created: all three now */
	P_MC = 16,                       /* parent's mtime and ctime change */
	P2_MC = 32,                      /* second parent's mtime and ctime change */
	T_A_ANY = 64,                    /* target's atime is not checked (relatime) */
};

struct ts_case {
	const char *what;
	int (*op)(void);
	const char *target, *parent, *parent2;
	int changes;
};

/* The tree every case starts from: dir/{f,g,sub/,lnk->f}, other/. */
static void ts_tree(void)
{
	cr_assert_eq(mkdir(at("dir"), 0755), 0);
	cr_assert_eq(mkdir(at("dir/sub"), 0755), 0);
	cr_assert_eq(mkdir(at("other"), 0755), 0);
	make_file_mode(at("dir/f"), 0644, "0123456789");
	make_file_mode(at("dir/g"), 0644, "g");
	cr_assert_eq(link(at("dir/g"), at("other/g-link")), 0);
	cr_assert_eq(symlink("f", at("dir/lnk")), 0);
}

static int op_create(void)
{
	int fd = open(at("dir/new"), O_CREAT | O_EXCL | O_WRONLY, 0644);
	return fd < 0 ? -1 : close(fd);
}
static int op_mkdir(void) { return mkdir(at("dir/new"), 0755); }
static int op_mknod(void) { return mknod(at("dir/new"), S_IFIFO | 0644, 0); }
static int op_symlink(void) { return symlink("f", at("dir/new")); }
static int op_write(void)
{
	int fd = open(at("dir/f"), O_WRONLY);
	ssize_t n = fd < 0 ? -1 : pwrite(fd, "ab", 2, 3);
	close(fd);
	return n == 2 ? 0 : -1;
}
static int op_append(void)
{
	int fd = open(at("dir/f"), O_WRONLY | O_APPEND);
	ssize_t n = fd < 0 ? -1 : write(fd, "ab", 2);
	close(fd);
	return n == 2 ? 0 : -1;
}
static int op_truncate_shrink(void) { return truncate(at("dir/f"), 4); }
static int op_truncate_grow(void) { return truncate(at("dir/f"), 100000); }
static int op_ftruncate(void)
{
	int fd = open(at("dir/f"), O_WRONLY);
	int r = fd < 0 ? -1 : ftruncate(fd, 1);
	close(fd);
	return r;
}
static int op_open_trunc(void)
{
	int fd = open(at("dir/f"), O_WRONLY | O_TRUNC);
	return fd < 0 ? -1 : close(fd);
}
static int op_chmod(void) { return chmod(at("dir/f"), 0600); }
static int op_chown(void) { return chown(at("dir/f"), 1000, 1000); }
static int op_chmod_dir(void) { return chmod(at("dir/sub"), 0700); }
static int op_link(void) { return link(at("dir/f"), at("other/f2")); }
static int op_unlink(void) { return unlink(at("dir/g")); }
static int op_rmdir(void) { return rmdir(at("dir/sub")); }
static int op_rename_in_dir(void) { return rename(at("dir/f"), at("dir/f-renamed")); }
static int op_rename_across(void) { return rename(at("dir/f"), at("other/f")); }
static int op_rename_dir_across(void) { return rename(at("dir/sub"), at("other/sub")); }
static int op_read(void)
{
	char buf[16];
	int fd = open(at("dir/f"), O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
	close(fd);
	return n < 0 ? -1 : 0;
}
static int op_readdir(void)
{
	DIR *d = opendir(at("dir"));
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n == 6 ? 0 : -1;
}
static int op_readlink(void)
{
	char buf[16];
	return readlink(at("dir/lnk"), buf, sizeof(buf)) == 1 ? 0 : -1;
}
static int op_stat(void)
{
	struct stat st;
	return stat(at("dir/f"), &st);
}

static struct ts_case ts_cases[] = {
	{ "create", op_create, "dir/new", "dir", NULL, T_NEW | P_MC },
	{ "mkdir", op_mkdir, "dir/new", "dir", NULL, T_NEW | P_MC },
	{ "mknod", op_mknod, "dir/new", "dir", NULL, T_NEW | P_MC },
	{ "symlink", op_symlink, "dir/new", "dir", NULL, T_NEW | P_MC },
	{ "write", op_write, "dir/f", "dir", NULL, T_M | T_C },
	{ "append", op_append, "dir/f", "dir", NULL, T_M | T_C },
	{ "truncate shrinking", op_truncate_shrink, "dir/f", "dir", NULL, T_M | T_C },
	{ "truncate growing", op_truncate_grow, "dir/f", "dir", NULL, T_M | T_C },
	{ "ftruncate", op_ftruncate, "dir/f", "dir", NULL, T_M | T_C },
	{ "open O_TRUNC", op_open_trunc, "dir/f", "dir", NULL, T_M | T_C },
	{ "chmod", op_chmod, "dir/f", "dir", NULL, T_C },
	{ "chown", op_chown, "dir/f", "dir", NULL, T_C },
	{ "chmod of a directory", op_chmod_dir, "dir/sub", "dir", NULL, T_C },
	{ "link", op_link, "dir/f", "other", "dir", T_C | P_MC },
	{ "unlink", op_unlink, "other/g-link", "dir", "other", T_C | P_MC },
	{ "rmdir", op_rmdir, "dir", "dir", NULL, T_M | T_C | P_MC },
	{ "rename in a directory", op_rename_in_dir, "dir/f-renamed", "dir", NULL, T_C | P_MC },
	{ "rename across", op_rename_across, "other/f", "dir", "other", T_C | P_MC | P2_MC },
	{ "rename dir across", op_rename_dir_across, "other/sub", "dir", "other",
	  T_C | P_MC | P2_MC },
	{ "read", op_read, "dir/f", "dir", NULL, T_A_ANY },
	{ "readdir", op_readdir, "dir/f", "dir", NULL, 0 },
	{ "readlink", op_readlink, "dir/f", "dir", NULL, 0 },
	{ "stat", op_stat, "dir/f", "dir", NULL, 0 },
};

/* The path before the operation of the inode that ends up at c->target. */
static const char *ts_target_before(const struct ts_case *c)
{
	if (c->op == op_rename_in_dir || c->op == op_rename_across)
		return "dir/f";
	if (c->op == op_rename_dir_across)
		return "dir/sub";
	return c->target;
}

#define NR_TS_CASES (sizeof(ts_cases) / sizeof(ts_cases[0]))

/*
 * Criterion runs each test in a freshly executed worker, so a parameter is
 * an index into ts_cases: pointers from the parent would not be valid there.
 */
ParameterizedTestParameters(attr, operation_changes_exactly_the_timestamps_tmpfs_changes)
{
	static int index[NR_TS_CASES];

	for (size_t i = 0; i < NR_TS_CASES; i++)
		index[i] = (int)i;
	return cr_make_param_array(int, index, NR_TS_CASES);
}

static void check_times(const char *what, const char *who, const struct stat *before,
			const struct stat *after, int a, int m, int c, struct timespec t0)
{
	char label[128];

	snprintf(label, sizeof(label), "%s: %s atime", what, who);
	if (a < 0)
		; /* atime is left to the relatime rules */
	else if (a)
		expect_ts_geq(after->st_atim, t0, label);
	else
		expect_ts_eq(after->st_atim, before->st_atim, label);
	snprintf(label, sizeof(label), "%s: %s mtime", what, who);
	if (m)
		expect_ts_geq(after->st_mtim, t0, label);
	else
		expect_ts_eq(after->st_mtim, before->st_mtim, label);
	snprintf(label, sizeof(label), "%s: %s ctime", what, who);
	if (c)
		expect_ts_geq(after->st_ctim, t0, label);
	else
		expect_ts_eq(after->st_ctim, before->st_ctim, label);
}

ParameterizedTest(int *index, attr, operation_changes_exactly_the_timestamps_tmpfs_changes)
{
	const struct ts_case *c = &ts_cases[*index];
	static const char *const all[] = { "dir", "dir/sub", "other", "dir/f", "dir/g", "dir/lnk" };
	struct stat target_before = { 0 }, parent_before, parent2_before, st;
	struct timespec t0;

	ts_tree();
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		set_old_times(at("%s", all[i]));
	if (!(c->changes & T_NEW))
		target_before = stat_of(at("%s", ts_target_before(c)));
	parent_before = stat_of(at("%s", c->parent));
	if (c->parent2)
		parent2_before = stat_of(at("%s", c->parent2));
	let_time_pass();
	t0 = now_floor();
	errno = 0;
	cr_assert_eq(c->op(), 0, "%s failed: %s", c->what, strerror(errno));

	st = stat_of(at("%s", c->target));
	if (c->changes & T_NEW) {
		expect_ts_geq(st.st_ctim, t0, c->what);
		expect_ts_eq(st.st_atim, st.st_ctim, c->what);
		expect_ts_eq(st.st_mtim, st.st_ctim, c->what);
	} else if (strcmp(c->target, c->parent)) {
		check_times(c->what, "target", &target_before, &st,
			    c->changes & T_A_ANY ? -1 : c->changes & T_A,
			    c->changes & T_M, c->changes & T_C, t0);
	}
	st = stat_of(at("%s", c->parent));
	/* A parent's atime moves with readdir under relatime: not checked. */
	check_times(c->what, "parent", &parent_before, &st, -1, c->changes & P_MC,
		    c->changes & (P_MC | (!strcmp(c->target, c->parent) ? T_C : 0)), t0);
	if (c->parent2) {
		st = stat_of(at("%s", c->parent2));
		check_times(c->what, "second parent", &parent2_before, &st, -1,
			    c->changes & P2_MC, c->changes & P2_MC, t0);
	}
}

Test(attr, new_file_times_equal_and_lie_between_before_and_after)
{
	struct timespec t0, t1;
	struct stat st;

	t0 = now_floor();
	make_file_mode(at("f"), 0644, NULL);
	t1 = now_ceil();
	st = stat_of(at("f"));
	expect_ts_geq(st.st_mtim, t0, "mtime");
	expect_ts_leq(st.st_mtim, t1, "mtime");
	expect_ts_geq(st.st_atim, t0, "atime");
	expect_ts_geq(st.st_ctim, t0, "ctime");
}

/* ---- permission enforcement --------------------------------------------- */

Test(attr, other_user_cannot_open_a_0600_root_file)
{
	make_file_mode(at("secret"), 0600, "s");
	assert_nobody_gets(try_read, at("secret"), EACCES);
	assert_nobody_gets(try_write, at("secret"), EACCES);
	make_file_mode(at("public"), 0644, "p");
	assert_nobody_gets(try_read, at("public"), 0);
	assert_nobody_gets(try_write, at("public"), EACCES);
	make_file_mode(at("open"), 0666, "o");
	assert_nobody_gets(try_write, at("open"), 0);
	assert_nobody_gets(try_append, at("open"), 0);
	cr_expect_eq(stat_of(at("open")).st_size, 2);
}

Test(attr, owner_bits_apply_to_the_owner_even_when_others_may_more)
{
	make_file_mode(at("f"), 0647, "f");
	assert_ok(chown(at("f"), NOBODY, NOBODY));
	/* Owner class r-- only: the owner may not write, though "other" may. */
	assert_ok(chmod(at("f"), 0407));
	assert_nobody_gets(try_read, at("f"), 0);
	assert_nobody_gets(try_write, at("f"), EACCES);
	/* Group class decides for a group member who is not the owner. */
	assert_ok(chown(at("f"), 0, NOBODY));
	assert_ok(chmod(at("f"), 0607));
	assert_nobody_gets(try_read, at("f"), EACCES);
}

Test(attr, other_user_cannot_create_in_a_0755_root_directory)
{
	struct stat st;

	assert_ok(mkdir(at("closed"), 0755));
	assert_nobody_gets(try_create, at("closed/f"), EACCES);
	assert_nobody_gets(try_mkdir, at("closed/d"), EACCES);
	assert_fails(access(at("closed/f"), F_OK), ENOENT);

	assert_ok(mkdir(at("open"), 0777));
	assert_nobody_gets(try_create, at("open/f"), 0);
	assert_nobody_gets(try_mkdir, at("open/d"), 0);
	st = stat_of(at("open/f"));
	cr_expect_eq(st.st_uid, NOBODY);
	cr_expect_eq(st.st_gid, NOBODY);
	st = stat_of(at("open/d"));
	cr_expect_eq(st.st_uid, NOBODY);
	cr_expect_eq(st.st_gid, NOBODY);
}

Test(attr, other_user_cannot_unlink_or_rename_in_a_0755_root_directory)
{
	assert_ok(mkdir(at("d"), 0755));
	make_file_mode(at("d/f"), 0666, NULL);
	assert_nobody_gets(try_unlink, at("d/f"), EACCES);
	assert_nobody_gets(try_rename_away, at("d/f"), EACCES);
	cr_expect(S_ISREG(stat_of(at("d/f")).st_mode));
}

Test(attr, other_user_cannot_search_a_0700_directory)
{
	assert_ok(mkdir(at("private"), 0700));
	make_file_mode(at("private/f"), 0644, "f");
	assert_nobody_gets(try_stat, at("private/f"), EACCES);
	assert_nobody_gets(try_read, at("private/f"), EACCES);
	assert_nobody_gets(try_opendir, at("private"), EACCES);
	assert_nobody_gets(try_stat, at("private"), 0);

	/* Search without read: names can be used but not listed. */
	assert_ok(mkdir(at("blind"), 0711));
	make_file_mode(at("blind/f"), 0644, "f");
	assert_nobody_gets(try_read, at("blind/f"), 0);
	assert_nobody_gets(try_opendir, at("blind"), EACCES);

	/* Read without search: the listing opens but names cannot be reached. */
	assert_ok(mkdir(at("listonly"), 0744));
	make_file_mode(at("listonly/f"), 0644, "f");
	assert_nobody_gets(try_opendir, at("listonly"), 0);
	assert_nobody_gets(try_stat, at("listonly/f"), EACCES);
}

Test(attr, sticky_directory_keeps_other_users_from_removing_roots_files)
{
	assert_ok(mkdir(at("tmp"), 0777));
	assert_ok(chmod(at("tmp"), 01777));
	cr_assert_eq(stat_of(at("tmp")).st_mode & 07777, 01777);
	make_file_mode(at("tmp/roots"), 0666, "r");
	assert_nobody_gets(try_unlink, at("tmp/roots"), EPERM);
	assert_nobody_gets(try_rename_away, at("tmp/roots"), EPERM);
	cr_expect(S_ISREG(stat_of(at("tmp/roots")).st_mode));
	/* The user may still remove what it owns. */
	assert_nobody_gets(try_create, at("tmp/mine"), 0);
	assert_nobody_gets(try_unlink, at("tmp/mine"), 0);
	assert_fails(access(at("tmp/mine"), F_OK), ENOENT);
	/* And root may remove the user's files. */
	assert_nobody_gets(try_create, at("tmp/theirs"), 0);
	assert_ok(unlink(at("tmp/theirs")));

	/* Without the sticky bit, the same unlink works. */
	assert_ok(chmod(at("tmp"), 0777));
	assert_nobody_gets(try_unlink, at("tmp/roots"), 0);
}

Test(attr, setgid_directory_passes_its_group_and_the_bit_to_new_entries)
{
	struct stat st;

	assert_ok(mkdir(at("shared"), 0777));
	assert_ok(chown(at("shared"), 0, 1234));
	assert_ok(chmod(at("shared"), 02777));
	cr_assert_eq(stat_of(at("shared")).st_mode & 07777, 02777);

	make_file_mode(at("shared/f"), 0644, NULL);
	st = stat_of(at("shared/f"));
	cr_expect_eq(st.st_gid, 1234, "new file gid %u", st.st_gid);
	cr_expect_eq(st.st_mode & S_ISGID, 0, "new file got the setgid bit");

	assert_ok(mkdir(at("shared/sub"), 0755));
	st = stat_of(at("shared/sub"));
	cr_expect_eq(st.st_gid, 1234, "new dir gid %u", st.st_gid);
	cr_expect_eq(st.st_mode & 07777, 02755, "new dir mode %o", st.st_mode & 07777);

	/* It carries on down the tree. */
	assert_ok(mkdir(at("shared/sub/deeper"), 0700));
	st = stat_of(at("shared/sub/deeper"));
	cr_expect_eq(st.st_gid, 1234);
	cr_expect_eq(st.st_mode & 07777, 02700, "mode %o", st.st_mode & 07777);

	assert_ok(mknod(at("shared/fifo"), S_IFIFO | 0600, 0));
	cr_expect_eq(stat_of(at("shared/fifo")).st_gid, 1234);
	assert_ok(symlink("f", at("shared/lnk")));
	cr_expect_eq(stat_of(at("shared/lnk")).st_gid, 1234);

	/* Another user creating there gets the directory's group too. */
	assert_nobody_gets(try_create, at("shared/by-nobody"), 0);
	st = stat_of(at("shared/by-nobody"));
	cr_expect_eq(st.st_uid, NOBODY);
	cr_expect_eq(st.st_gid, 1234, "gid %u", st.st_gid);
}

Test(attr, directory_without_setgid_gives_new_entries_the_creators_group)
{
	assert_ok(mkdir(at("plain"), 0777));
	assert_ok(chown(at("plain"), 0, 1234));
	make_file_mode(at("plain/f"), 0644, NULL);
	cr_expect_eq(stat_of(at("plain/f")).st_gid, getegid());
	assert_nobody_gets(try_mkdir, at("plain/d"), 0);
	cr_expect_eq(stat_of(at("plain/d")).st_gid, NOBODY);
	cr_expect_eq(stat_of(at("plain/d")).st_mode & 07777, 0755);
}

Test(attr, umask_is_applied_to_new_files_and_directories)
{
	struct stat st;
	int fd;

	umask(027);
	fd = open(at("f"), O_CREAT | O_WRONLY, 0666);
	cr_assert_geq(fd, 0);
	close(fd);
	assert_ok(mkdir(at("d"), 0777));
	assert_ok(mknod(at("p"), S_IFIFO | 0666, 0));
	umask(0);
	cr_expect_eq(stat_of(at("f")).st_mode & 07777, 0640, "file mode %o",
		     stat_of(at("f")).st_mode & 07777);
	cr_expect_eq(stat_of(at("d")).st_mode & 07777, 0750, "dir mode %o",
		     stat_of(at("d")).st_mode & 07777);
	cr_expect_eq(stat_of(at("p")).st_mode & 07777, 0640, "fifo mode %o",
		     stat_of(at("p")).st_mode & 07777);

	umask(0);
	fd = open(at("g"), O_CREAT | O_WRONLY, 0666);
	cr_assert_geq(fd, 0);
	close(fd);
	st = stat_of(at("g"));
	cr_expect_eq(st.st_mode & 07777, 0666, "file mode %o with umask 0", st.st_mode & 07777);
	/* The umask does not touch chmod. */
	umask(077);
	assert_ok(chmod(at("g"), 0777));
	umask(0);
	cr_expect_eq(stat_of(at("g")).st_mode & 07777, 0777);
}

Test(attr, access_for_root_ignores_rw_bits_but_needs_an_x_bit)
{
	make_file_mode(at("none"), 0000, NULL);
	assert_ok(access(at("none"), R_OK | W_OK));
	assert_fails(access(at("none"), X_OK), EACCES);
	make_file_mode(at("ox"), 0001, NULL);
	assert_ok(access(at("ox"), X_OK));
	assert_ok(mkdir(at("d"), 0000));
	assert_ok(access(at("d"), R_OK | W_OK | X_OK));
	assert_fails(access(at("missing"), F_OK), ENOENT);
}

Test(attr, access_for_another_user_follows_the_mode_bits)
{
	make_file_mode(at("r"), 0644, NULL);
	make_file_mode(at("x"), 0755, NULL);
	make_file_mode(at("w"), 0602, NULL);
	assert_nobody_gets(try_access_r, at("r"), 0);
	assert_nobody_gets(try_access_w, at("r"), EACCES);
	assert_nobody_gets(try_access_x, at("r"), EACCES);
	assert_nobody_gets(try_access_x, at("x"), 0);
	assert_nobody_gets(try_access_w, at("w"), 0);
	assert_nobody_gets(try_access_r, at("w"), EACCES);
	assert_ok(mkdir(at("d"), 0700));
	make_file_mode(at("d/f"), 0666, NULL);
	assert_nobody_gets(try_access_r, at("d/f"), EACCES);
}

Test(attr, faccessat_with_at_eaccess_uses_the_effective_ids)
{
	pid_t pid;
	int status;

	make_file_mode(at("f"), 0600, NULL);
	assert_ok(faccessat(AT_FDCWD, at("f"), R_OK, AT_EACCESS));
	/* Real uid root, effective uid 65534: only AT_EACCESS sees the denial. */
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (setgroups(0, NULL) || setresgid(0, NOBODY, 0) || setresuid(0, NOBODY, 0))
			_exit(255);
		int real = faccessat(AT_FDCWD, at("f"), R_OK, 0) == 0 ? 0 : errno;
		int eff = faccessat(AT_FDCWD, at("f"), R_OK, AT_EACCESS) == 0 ? 0 : errno;
		_exit(real == 0 && eff == EACCES ? 0 : 1 + (real != 0) + 2 * (eff != EACCES));
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "faccessat real/effective mismatch (child status %#x)", status);
}
