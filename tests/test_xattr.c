/* SPDX-License-Identifier: MIT */
/*
 * test_xattr.c - extended attributes: the user.*, trusted.* and security.*
 * namespaces, create/replace flags, size queries and short buffers, name
 * and value limits, the per-inode 1 MiB budget, attributes on every kind of
 * inode, and how they follow links, renames and unlinks.  tmpfs is the
 * reference, except for the budget, which is hmmfs's own.
 */
#define _GNU_SOURCE
#include "config.h"
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define XATTR_VALUE_MAX 65536            /* XATTR_SIZE_MAX in the kernel */
#define XATTR_INODE_BUDGET (1024 * 1024) /* names plus values, per inode */

static void xattr_setup(void)
{
	umask(0);
	mnt_setup();
	cr_assert_eq(chmod(mnt.dir, 0755), 0, "chmod of the mount root: %s", strerror(errno));
}

TestSuite(xattr, .init = xattr_setup, .fini = mnt_teardown);

/* The value of name on path must be exactly want[0..len). */
static void expect_value(const char *path, const char *name, const void *want, size_t len)
{
	static char buf[XATTR_VALUE_MAX + 1];
	ssize_t n = getxattr(path, name, buf, sizeof(buf));

	cr_expect_eq(n, (ssize_t)len, "getxattr %s: %zd (%s), want %zu", name, n,
		     n < 0 ? strerrorname_np(errno) : "ok", len);
	if (n == (ssize_t)len)
		cr_expect_eq(memcmp(buf, want, len), 0, "value of %s differs", name);
}

/* The names listxattr returns, sorted, in a NULL-terminated array. */
struct names {
	char *buf;
	char **v;
	size_t n;
};

static struct names list_names(const char *path, int nofollow)
{
	struct names l = { 0 };
	ssize_t size = nofollow ? llistxattr(path, NULL, 0) : listxattr(path, NULL, 0);
	ssize_t got;

	cr_assert_geq(size, 0, "listxattr size query: %s", strerror(errno));
	l.buf = malloc((size_t)size + 1);
	cr_assert_not_null(l.buf);
	got = nofollow ? llistxattr(path, l.buf, (size_t)size) : listxattr(path, l.buf, (size_t)size);
	cr_assert_eq(got, size, "listxattr returned %zd after announcing %zd", got, size);
	cr_assert(size == 0 || l.buf[size - 1] == 0, "list does not end with a NUL");
	l.v = calloc((size_t)size + 1, sizeof(*l.v));
	for (ssize_t off = 0; off < size; off += (ssize_t)strlen(l.buf + off) + 1) {
		cr_assert_gt(strlen(l.buf + off), 0, "empty name in the list at %zd", off);
		l.v[l.n++] = l.buf + off;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
	return l;
}

static void names_free(struct names *l)
{
	free(l->v);
	free(l->buf);
}

/* The list must hold exactly these names, in any order. */
static void expect_names(const char *path, int nofollow, const char *const *want, size_t n)
{
	struct names l = list_names(path, nofollow);
	const char **sorted = calloc(n + 1, sizeof(*sorted));

	if (n) {
		memcpy(sorted, want, n * sizeof(*sorted));
		qsort(sorted, n, sizeof(*sorted), cmp_str);
	}
	cr_expect_eq(l.n, n, "listxattr gave %zu names, want %zu", l.n, n);
	for (size_t i = 0; i < n && i < l.n; i++)
		cr_expect_str_eq(l.v[i], sorted[i], "name %zu is %s, want %s", i, l.v[i], sorted[i]);
	free(sorted);
	names_free(&l);
}

/* ---- the basics --------------------------------------------------------- */

Test(xattr, user_attribute_can_be_set_read_listed_and_removed)
{
	const char *const one[] = { "user.color" };

	make_file(at("f"), NULL);
	expect_names(at("f"), 0, NULL, 0);
	assert_ok(setxattr(at("f"), "user.color", "blue", 4, 0));
	expect_value(at("f"), "user.color", "blue", 4);
	expect_names(at("f"), 0, one, 1);
	assert_ok(removexattr(at("f"), "user.color"));
	assert_fails(getxattr(at("f"), "user.color", NULL, 0), ENODATA);
	expect_names(at("f"), 0, NULL, 0);
}

Test(xattr, setting_again_replaces_the_value_with_a_longer_or_shorter_one)
{
	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.v", "short", 5, 0));
	assert_ok(setxattr(at("f"), "user.v", "a much longer value", 19, 0));
	expect_value(at("f"), "user.v", "a much longer value", 19);
	assert_ok(setxattr(at("f"), "user.v", "x", 1, XATTR_REPLACE));
	expect_value(at("f"), "user.v", "x", 1);
	cr_expect_eq(getxattr(at("f"), "user.v", NULL, 0), 1);
}

Test(xattr, xattr_create_on_an_existing_attribute_fails_with_eexist)
{
	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.a", "first", 5, XATTR_CREATE));
	assert_fails(setxattr(at("f"), "user.a", "second", 6, XATTR_CREATE), EEXIST);
	expect_value(at("f"), "user.a", "first", 5);
}

Test(xattr, xattr_replace_of_a_missing_attribute_fails_with_enodata)
{
	const char *const one[] = { "user.other" };

	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.other", "o", 1, 0));
	assert_fails(setxattr(at("f"), "user.a", "v", 1, XATTR_REPLACE), ENODATA);
	expect_names(at("f"), 0, one, 1);
}

Test(xattr, unknown_set_flags_fail_with_einval)
{
	make_file(at("f"), NULL);
	assert_fails(setxattr(at("f"), "user.a", "v", 1, 4), EINVAL);
	expect_names(at("f"), 0, NULL, 0);
}

Test(xattr, missing_attribute_gives_enodata_for_get_and_remove)
{
	make_file(at("f"), NULL);
	assert_fails(getxattr(at("f"), "user.none", NULL, 0), ENODATA);
	char buf[8];
	assert_fails(getxattr(at("f"), "user.none", buf, sizeof(buf)), ENODATA);
	assert_fails(removexattr(at("f"), "user.none"), ENODATA);
	assert_ok(setxattr(at("f"), "user.gone", "v", 1, 0));
	assert_ok(removexattr(at("f"), "user.gone"));
	assert_fails(removexattr(at("f"), "user.gone"), ENODATA);
}

Test(xattr, size_zero_query_returns_the_size_and_a_small_buffer_gives_erange)
{
	char buf[64];

	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.value", "0123456789", 10, 0));
	assert_ok(setxattr(at("f"), "user.second", "x", 1, 0));
	cr_expect_eq(getxattr(at("f"), "user.value", NULL, 0), 10);
	assert_fails(getxattr(at("f"), "user.value", buf, 9), ERANGE);
	assert_fails(getxattr(at("f"), "user.value", buf, 1), ERANGE);
	cr_expect_eq(getxattr(at("f"), "user.value", buf, 10), 10);

	/* "user.value\0user.second\0" */
	ssize_t need = (ssize_t)(sizeof("user.value") + sizeof("user.second"));
	cr_expect_eq(listxattr(at("f"), NULL, 0), need);
	assert_fails(listxattr(at("f"), buf, (size_t)need - 1), ERANGE);
	assert_fails(listxattr(at("f"), buf, 1), ERANGE);
	cr_expect_eq(listxattr(at("f"), buf, sizeof(buf)), need);
}

Test(xattr, empty_value_is_stored_and_listed)
{
	const char *const one[] = { "user.empty" };
	char buf[8];

	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.empty", "", 0, 0));
	cr_expect_eq(getxattr(at("f"), "user.empty", NULL, 0), 0);
	cr_expect_eq(getxattr(at("f"), "user.empty", buf, sizeof(buf)), 0);
	expect_names(at("f"), 0, one, 1);
	/* XATTR_CREATE sees it as existing. */
	assert_fails(setxattr(at("f"), "user.empty", "x", 1, XATTR_CREATE), EEXIST);
	/* A NULL value with size 0 is also an empty value. */
	assert_ok(setxattr(at("f"), "user.null", NULL, 0, 0));
	cr_expect_eq(getxattr(at("f"), "user.null", NULL, 0), 0);
}

Test(xattr, binary_value_with_nul_bytes_comes_back_byte_for_byte)
{
	unsigned char value[300];

	for (size_t i = 0; i < sizeof(value); i++)
		value[i] = (unsigned char)(i * 7);
	value[0] = value[10] = value[299] = 0;
	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.bin", value, sizeof(value), 0));
	expect_value(at("f"), "user.bin", value, sizeof(value));
}

/* ---- limits ------------------------------------------------------------- */

Test(xattr, name_of_255_bytes_works_and_256_fails_with_erange)
{
	char name[300];

	make_file(at("f"), NULL);
	strcpy(name, "user.");
	memset(name + 5, 'n', 250);
	name[255] = 0;
	assert_ok(setxattr(at("f"), name, "v", 1, 0));
	expect_value(at("f"), name, "v", 1);
	char kept[256];
	const char *const one[] = { kept };
	strcpy(kept, name);
	expect_names(at("f"), 0, one, 1);

	name[255] = 'n';
	name[256] = 0;
	assert_fails(setxattr(at("f"), name, "v", 1, 0), ERANGE);
	assert_fails(getxattr(at("f"), name, NULL, 0), ERANGE);
	assert_fails(removexattr(at("f"), name), ERANGE);
	expect_names(at("f"), 0, one, 1);
}

Test(xattr, empty_name_fails_with_erange)
{
	make_file(at("f"), NULL);
	assert_fails(setxattr(at("f"), "", "v", 1, 0), ERANGE);
	assert_fails(getxattr(at("f"), "", NULL, 0), ERANGE);
}

Test(xattr, namespace_prefix_without_a_name_fails_with_einval)
{
	make_file(at("f"), NULL);
	assert_fails(setxattr(at("f"), "user.", "v", 1, 0), EINVAL);
	assert_fails(getxattr(at("f"), "user.", NULL, 0), EINVAL);
	expect_names(at("f"), 0, NULL, 0);
}

Test(xattr, value_of_64_kib_works_and_one_byte_more_fails_with_e2big)
{
	static char value[XATTR_VALUE_MAX + 1];

	for (size_t i = 0; i < sizeof(value); i++)
		value[i] = (char)(i * 31 + (i >> 8));
	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.big", value, XATTR_VALUE_MAX, 0));
	cr_expect_eq(getxattr(at("f"), "user.big", NULL, 0), XATTR_VALUE_MAX);
	expect_value(at("f"), "user.big", value, XATTR_VALUE_MAX);
	assert_fails(setxattr(at("f"), "user.bigger", value, XATTR_VALUE_MAX + 1, 0), E2BIG);
	assert_fails(getxattr(at("f"), "user.bigger", NULL, 0), ENODATA);
}

/*
 * hmmfs caps names plus values at 1 MiB per inode.  Sixteen 64 KiB values
 * exceed it by their names; fifteen fit with room to spare.
 */
Test(xattr, per_inode_budget_of_one_mib_gives_enospc_and_is_freed_by_remove)
{
	static char value[XATTR_VALUE_MAX];
	char name[32];
	int i;

	memset(value, 'v', sizeof(value));
	make_file(at("f"), NULL);
	for (i = 0; i < 15; i++) {
		snprintf(name, sizeof(name), "user.b%02d", i);
		errno = 0;
		cr_assert_eq(setxattr(at("f"), name, value, sizeof(value), 0), 0,
			     "value %d of 64 KiB (%d KiB in all): %s", i, (i + 1) * 64,
			     strerror(errno));
	}
	assert_fails(setxattr(at("f"), "user.b15", value, sizeof(value), 0), ENOSPC);
	assert_fails(getxattr(at("f"), "user.b15", NULL, 0), ENODATA);
	/* What is stored is intact. */
	expect_value(at("f"), "user.b00", value, sizeof(value));
	expect_value(at("f"), "user.b14", value, sizeof(value));
	/* Smaller values still fit in what is left... */
	assert_ok(setxattr(at("f"), "user.small", value, 1000, 0));
	/* ...and removing one frees its share. */
	assert_ok(removexattr(at("f"), "user.b00"));
	assert_ok(setxattr(at("f"), "user.b15", value, sizeof(value), 0));
	expect_value(at("f"), "user.b15", value, sizeof(value));

	/* The budget is per inode: another file starts empty. */
	make_file(at("g"), NULL);
	assert_ok(setxattr(at("g"), "user.b00", value, sizeof(value), 0));
}

Test(xattr, replacing_a_value_within_a_full_budget_counts_only_the_difference)
{
	static char value[XATTR_VALUE_MAX];
	char name[32];

	memset(value, 'r', sizeof(value));
	make_file(at("f"), NULL);
	for (int i = 0; i < 15; i++) {
		snprintf(name, sizeof(name), "user.r%02d", i);
		assert_ok(setxattr(at("f"), name, value, sizeof(value), 0));
	}
	/* The same size again fits, whatever the free room is. */
	value[0] = 'R';
	assert_ok(setxattr(at("f"), "user.r07", value, sizeof(value), XATTR_REPLACE));
	expect_value(at("f"), "user.r07", value, sizeof(value));
}

/* ---- namespaces --------------------------------------------------------- */

static const char *const unsupported_names[] = {
	"foo.bar", "system.foo", "nonamespace", "User.upper", "userx.a",
};

ParameterizedTestParameters(xattr, unsupported_namespace_fails_with_eopnotsupp)
{
	static int index[sizeof(unsupported_names) / sizeof(unsupported_names[0])];

	for (size_t i = 0; i < sizeof(index) / sizeof(index[0]); i++)
		index[i] = (int)i;
	return cr_make_param_array(int, index, sizeof(index) / sizeof(index[0]));
}

ParameterizedTest(int *i, xattr, unsupported_namespace_fails_with_eopnotsupp)
{
	const char *name = unsupported_names[*i];

	make_file(at("f"), NULL);
	assert_fails(setxattr(at("f"), name, "v", 1, 0), EOPNOTSUPP);
	assert_fails(getxattr(at("f"), name, NULL, 0), EOPNOTSUPP);
	assert_fails(removexattr(at("f"), name), EOPNOTSUPP);
	expect_names(at("f"), 0, NULL, 0);
}

Test(xattr, trusted_and_security_namespaces_work_for_root)
{
	const char *const names[] = { "trusted.t", "security.s", "user.u" };

	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "trusted.t", "tv", 2, 0));
	assert_ok(setxattr(at("f"), "security.s", "sv", 2, 0));
	assert_ok(setxattr(at("f"), "user.u", "uv", 2, 0));
	expect_value(at("f"), "trusted.t", "tv", 2);
	expect_value(at("f"), "security.s", "sv", 2);
	expect_names(at("f"), 0, names, 3);
	assert_ok(removexattr(at("f"), "trusted.t"));
	assert_ok(removexattr(at("f"), "security.s"));
	const char *const left[] = { "user.u" };
	expect_names(at("f"), 0, left, 1);
}

static int try_set_trusted(const char *p) { return setxattr(p, "trusted.x", "v", 1, 0); }
static int try_get_trusted(const char *p) { return (int)getxattr(p, "trusted.t", NULL, 0); }
static int try_set_user(const char *p) { return setxattr(p, "user.x", "v", 1, 0); }
static int try_get_user(const char *p) { return (int)getxattr(p, "user.u", NULL, 0); }
static int try_remove_user(const char *p) { return removexattr(p, "user.u"); }

/* Succeeds if the list the caller sees holds no trusted.* name. */
static int try_list_without_trusted(const char *p)
{
	char buf[256];
	ssize_t n = listxattr(p, buf, sizeof(buf));

	if (n < 0)
		return -1;
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(buf + off) + 1)
		if (!strncmp(buf + off, "trusted.", 8)) {
			errno = EEXIST;
			return -1;
		}
	return 0;
}

Test(xattr, trusted_namespace_is_out_of_reach_of_unprivileged_users)
{
	make_file(at("f"), NULL);
	assert_ok(chmod(at("f"), 0666));
	assert_ok(setxattr(at("f"), "trusted.t", "tv", 2, 0));
	assert_ok(setxattr(at("f"), "user.u", "uv", 2, 0));
	assert_nobody_gets(try_set_trusted, at("f"), EPERM);
	assert_nobody_gets(try_get_trusted, at("f"), ENODATA);
	assert_nobody_gets(try_get_user, at("f"), 0);
	assert_nobody_gets(try_list_without_trusted, at("f"), 0);
}

Test(xattr, user_attributes_need_read_and_write_permission_on_the_file)
{
	make_file(at("ro"), NULL);
	assert_ok(chmod(at("ro"), 0644));
	assert_ok(setxattr(at("ro"), "user.u", "uv", 2, 0));
	assert_nobody_gets(try_get_user, at("ro"), 0);
	assert_nobody_gets(try_set_user, at("ro"), EACCES);
	assert_nobody_gets(try_remove_user, at("ro"), EACCES);

	make_file(at("none"), NULL);
	assert_ok(chmod(at("none"), 0600));
	assert_ok(setxattr(at("none"), "user.u", "uv", 2, 0));
	assert_nobody_gets(try_get_user, at("none"), EACCES);

	make_file(at("rw"), NULL);
	assert_ok(chmod(at("rw"), 0666));
	assert_nobody_gets(try_set_user, at("rw"), 0);
	expect_value(at("rw"), "user.x", "v", 1);
}

/* ---- kinds of inode ----------------------------------------------------- */

Test(xattr, directories_carry_user_attributes)
{
	const char *const one[] = { "user.dir" };

	assert_ok(mkdir(at("d"), 0755));
	assert_ok(setxattr(at("d"), "user.dir", "dv", 2, 0));
	expect_value(at("d"), "user.dir", "dv", 2);
	expect_names(at("d"), 0, one, 1);
	/* An attribute does not make a directory non-empty. */
	assert_ok(rmdir(at("d")));
	assert_ok(mkdir(at("d"), 0755));
	expect_names(at("d"), 0, NULL, 0);
	/* The root directory too. */
	assert_ok(setxattr(mnt.dir, "user.root", "r", 1, 0));
	expect_value(mnt.dir, "user.root", "r", 1);
}

Test(xattr, symlink_refuses_user_attributes_but_takes_trusted_ones)
{
	const char *const target_names[] = { "user.target" };
	const char *const link_names[] = { "trusted.link" };
	char buf[16];

	make_file(at("f"), NULL);
	assert_ok(symlink("f", at("s")));
	/* As the kernel does: user.* is for regular files and directories only. */
	assert_fails(lsetxattr(at("s"), "user.x", "v", 1, 0), EPERM);
	assert_fails(lgetxattr(at("s"), "user.x", buf, sizeof(buf)), ENODATA);
	assert_fails(lremovexattr(at("s"), "user.x"), EPERM);
	/* The following variants act on the target. */
	assert_ok(setxattr(at("s"), "user.target", "t", 1, 0));
	expect_value(at("f"), "user.target", "t", 1);
	expect_names(at("f"), 0, target_names, 1);
	/* trusted.* sticks to the link itself. */
	assert_ok(lsetxattr(at("s"), "trusted.link", "l", 1, 0));
	cr_expect_eq(lgetxattr(at("s"), "trusted.link", buf, sizeof(buf)), 1);
	expect_names(at("s"), 1, link_names, 1);
	expect_names(at("f"), 0, target_names, 1);
}

Test(xattr, fifo_and_device_nodes_refuse_user_attributes_with_eperm)
{
	assert_ok(mknod(at("fifo"), S_IFIFO | 0644, 0));
	assert_ok(mknod(at("chr"), S_IFCHR | 0644, 0));
	assert_fails(setxattr(at("fifo"), "user.x", "v", 1, 0), EPERM);
	assert_fails(setxattr(at("chr"), "user.x", "v", 1, 0), EPERM);
	assert_ok(setxattr(at("fifo"), "trusted.x", "v", 1, 0));
	expect_value(at("fifo"), "trusted.x", "v", 1);
}

Test(xattr, fd_variants_work_on_an_open_file)
{
	const char *const one[] = { "user.fd" };
	char buf[16];
	int fd;

	make_file(at("f"), NULL);
	fd = open(at("f"), O_RDONLY);
	cr_assert_geq(fd, 0);
	assert_ok(fsetxattr(fd, "user.fd", "fdv", 3, 0));
	cr_expect_eq(fgetxattr(fd, "user.fd", buf, sizeof(buf)), 3);
	cr_expect_eq(memcmp(buf, "fdv", 3), 0);
	cr_expect_eq(flistxattr(fd, buf, sizeof(buf)), (ssize_t)sizeof("user.fd"));
	expect_names(at("f"), 0, one, 1);
	assert_ok(fremovexattr(fd, "user.fd"));
	assert_fails(fgetxattr(fd, "user.fd", buf, sizeof(buf)), ENODATA);
	close(fd);
}

/* ---- links, renames, unlink --------------------------------------------- */

Test(xattr, attributes_follow_hard_links_and_survive_rename)
{
	make_file(at("a"), NULL);
	assert_ok(link(at("a"), at("b")));
	assert_ok(setxattr(at("a"), "user.shared", "s", 1, 0));
	expect_value(at("b"), "user.shared", "s", 1);
	assert_ok(setxattr(at("b"), "user.shared", "changed", 7, 0));
	expect_value(at("a"), "user.shared", "changed", 7);

	assert_ok(mkdir(at("d"), 0755));
	assert_ok(rename(at("a"), at("d/renamed")));
	expect_value(at("d/renamed"), "user.shared", "changed", 7);
	assert_ok(unlink(at("b")));
	expect_value(at("d/renamed"), "user.shared", "changed", 7);

	assert_ok(setxattr(at("d"), "user.dir", "x", 1, 0));
	assert_ok(rename(at("d"), at("d2")));
	expect_value(at("d2"), "user.dir", "x", 1);
	/* Renaming over a file drops the replaced file's attributes, not ours. */
	make_file(at("victim"), NULL);
	assert_ok(setxattr(at("victim"), "user.victim", "v", 1, 0));
	assert_ok(rename(at("d2/renamed"), at("victim")));
	const char *const one[] = { "user.shared" };
	expect_names(at("victim"), 0, one, 1);
}

Test(xattr, unlinked_file_keeps_its_attributes_while_open_and_a_new_file_has_none)
{
	char buf[16];
	int fd;

	make_file(at("f"), NULL);
	for (int i = 0; i < 20; i++) {
		char name[32];

		snprintf(name, sizeof(name), "user.n%d", i);
		assert_ok(setxattr(at("f"), name, "payload-payload", 15, 0));
	}
	fd = open(at("f"), O_RDONLY);
	cr_assert_geq(fd, 0);
	assert_ok(unlink(at("f")));
	cr_expect_eq(fgetxattr(fd, "user.n7", buf, sizeof(buf)), 15);
	assert_ok(fsetxattr(fd, "user.late", "l", 1, 0));
	close(fd);
	/* Same name, new inode: nothing carried over. */
	make_file(at("f"), NULL);
	expect_names(at("f"), 0, NULL, 0);
	/* A file unlinked while closed frees them at once (ASan checks for leaks). */
	assert_ok(setxattr(at("f"), "user.x", "x", 1, 0));
	assert_ok(unlink(at("f")));
	assert_ok(mkdir(at("d"), 0755));
	assert_ok(setxattr(at("d"), "user.x", "x", 1, 0));
	assert_ok(rmdir(at("d")));
}

/* ---- times -------------------------------------------------------------- */

Test(xattr, set_and_remove_change_ctime_but_not_mtime)
{
	struct timespec old[2] = { { 1000000000, 1 }, { 1000000000, 2 } };
	struct stat before, after;

	make_file(at("f"), NULL);
	assert_ok(utimensat(AT_FDCWD, at("f"), old, 0));
	assert_ok(stat(at("f"), &before));
	let_time_pass();
	assert_ok(setxattr(at("f"), "user.t", "v", 1, 0));
	assert_ok(stat(at("f"), &after));
	cr_expect_gt(ts_cmp(after.st_ctim, before.st_ctim), 0, "setxattr left ctime alone");
	cr_expect_eq(ts_cmp(after.st_mtim, old[1]), 0, "setxattr changed mtime");
	cr_expect_eq(ts_cmp(after.st_atim, old[0]), 0, "setxattr changed atime");

	before = after;
	let_time_pass();
	assert_ok(removexattr(at("f"), "user.t"));
	assert_ok(stat(at("f"), &after));
	cr_expect_gt(ts_cmp(after.st_ctim, before.st_ctim), 0, "removexattr left ctime alone");
	cr_expect_eq(ts_cmp(after.st_mtim, old[1]), 0, "removexattr changed mtime");
}

Test(xattr, failed_or_read_only_calls_leave_ctime_alone)
{
	struct stat before, after;
	char buf[8];

	make_file(at("f"), NULL);
	assert_ok(setxattr(at("f"), "user.t", "v", 1, 0));
	assert_ok(stat(at("f"), &before));
	let_time_pass();
	assert_fails(setxattr(at("f"), "user.t", "w", 1, XATTR_CREATE), EEXIST);
	assert_fails(setxattr(at("f"), "user.none", "w", 1, XATTR_REPLACE), ENODATA);
	assert_fails(removexattr(at("f"), "user.none"), ENODATA);
	cr_expect_eq(getxattr(at("f"), "user.t", buf, sizeof(buf)), 1);
	cr_expect_geq(listxattr(at("f"), buf, sizeof(buf)), 0);
	assert_ok(stat(at("f"), &after));
	cr_expect_eq(ts_cmp(after.st_ctim, before.st_ctim), 0, "ctime moved");
}

/* ---- many attributes ---------------------------------------------------- */

Test(xattr, five_hundred_attributes_on_one_file_are_all_kept)
{
	enum { N = 500 };
	static const char *names[N];
	static char storage[N][32];
	char value[32];

	make_file(at("f"), NULL);
	for (int i = 0; i < N; i++) {
		snprintf(storage[i], sizeof(storage[i]), "user.attr.%03d", i);
		names[i] = storage[i];
		snprintf(value, sizeof(value), "value-%d", i * i);
		errno = 0;
		cr_assert_eq(setxattr(at("f"), names[i], value, strlen(value), XATTR_CREATE), 0,
			     "attribute %d: %s", i, strerror(errno));
	}
	expect_names(at("f"), 0, names, N);
	for (int i = 0; i < N; i += 7) {
		snprintf(value, sizeof(value), "value-%d", i * i);
		expect_value(at("f"), names[i], value, strlen(value));
	}
	/* Remove the even ones; the odd ones stay. */
	for (int i = 0; i < N; i += 2)
		assert_ok(removexattr(at("f"), names[i]));
	static const char *odd[N / 2];
	for (int i = 0; i < N / 2; i++)
		odd[i] = names[2 * i + 1];
	expect_names(at("f"), 0, odd, N / 2);
	snprintf(value, sizeof(value), "value-%d", 499 * 499);
	expect_value(at("f"), names[499], value, strlen(value));
}
