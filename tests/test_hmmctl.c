/* SPDX-License-Identifier: MIT */
/*
 * test_hmmctl.c - the hmmctl command-line tool against a real mount with two
 * devices (dev0 private, dev1 coherent, 16 MiB each, evict=none): every
 * command's table and JSON output, --map for known layouts, migrations seen
 * through residency, the error messages for ENODEV, ENOTTY, EINVAL and
 * ENOSPC, and the util-linux conventions (--help, --version, exit status 2
 * with a hint for bad usage).
 *
 * hmmctl runs with fork/exec (HMMCTL_BIN), stdout and stderr captured
 * through pipes, stdin from /dev/null; so it never sees a terminal, and
 * --map is 64 columns wide.  Its JSON is checked with the small parser
 * below, which refuses anything that is not strict JSON.  Layouts are made
 * with libhmm's hmm_file_migrate() directly, so that hmmctl's own output is
 * compared with a known truth.
 */
#include "config.h"
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hmm.h>

#define MIB (1024 * 1024)
#define HINT "Try 'hmmctl --help' for more information.\n"

/* ---- running hmmctl ------------------------------------------------------ */

/* Run hmmctl with args (NULL-terminated, without argv[0]); 20 s at most. */
static void run_argv(struct run *r, const char *const *args)
{
	const char *argv[32] = { "hmmctl" };
	int n = 1;

	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	run_cmd(HMMCTL_BIN, (char *const *)argv, NULL, 20000, r);
	cr_assert_neq(r->status, -1, "hmmctl %s timed out", argv[1] ? argv[1] : "");
}

/* run(r, "residency", path, NULL): hmmctl with these arguments. */
#define run(r, ...) run_argv((r), (const char *const[]){ __VA_ARGS__, NULL })

static struct run *new_run(void)
{
	struct run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	return r;
}

/* The run must have exited 0 with nothing on stderr. */
static void expect_ok(const struct run *r)
{
	cr_assert_eq(r->status, 0, "exit %d, stderr: %s", r->status, r->err);
	cr_assert_str_empty(r->err, "unexpected stderr: %s", r->err);
}

/* The run must have failed (exit 1) with exactly this line on stderr. */
static void expect_failure(const struct run *r, const char *line)
{
	char want[1024];

	snprintf(want, sizeof(want), "hmmctl: %s\n", line);
	cr_assert_eq(r->status, 1, "exit %d (expected 1), stderr: %s", r->status, r->err);
	cr_assert_str_eq(r->err, want);
	cr_assert_str_empty(r->out, "stdout on failure: %s", r->out);
}

/* Line n (from 0) of text, without its newline, into a static buffer. */
static const char *line_of(const char *text, int n)
{
	static char buf[4096];
	const char *end;

	for (; n > 0 && text; n--) {
		text = strchr(text, '\n');
		if (text)
			text++;
	}
	cr_assert(text && *text, "no line %d in:\n%s", n, text ? text : "");
	end = strchr(text, '\n');
	snprintf(buf, sizeof(buf), "%.*s", (int)(end ? end - text : (long)strlen(text)), text);
	return buf;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ---- a strict little JSON parser ------------------------------------------------ */

/*
 * Values live in a static pool, reset by each json_parse(): Criterion runs
 * every test in its own process, and nothing is left to free.  Numbers are
 * integers (hmmctl prints no other kind); strings may hold escapes.
 */
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jtype type;
	long long num;      /* J_NUM, J_BOOL */
	const char *str;    /* J_STR */
	const char *key;    /* when a member of an object */
	struct jv *first;   /* J_ARR, J_OBJ: first element */
	struct jv *next;    /* next element of the parent */
	int count;          /* J_ARR, J_OBJ */
};

static struct jv jpool[8192];
static int jused;
static char jstrings[RUN_OUT_MAX * 2];
static size_t jstrused;

struct jparser {
	const char *p;
	const char *text;
};

static void jfail(struct jparser *ps, const char *what)
{
	cr_assert_fail("bad JSON (%s) at offset %ld: %.40s\nin:\n%s", what,
		       (long)(ps->p - ps->text), ps->p, ps->text);
}

static void jspace(struct jparser *ps)
{
	while (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\t' || *ps->p == '\r')
		ps->p++;
}

static const char *jstring(struct jparser *ps)
{
	char *out = jstrings + jstrused, *o = out;

	if (*ps->p != '"')
		jfail(ps, "expected a string");
	ps->p++;
	while (*ps->p != '"') {
		unsigned char c = (unsigned char)*ps->p;

		if (c == '\0' || c < 0x20)
			jfail(ps, "unterminated string or control character");
		if (c == '\\') {
			ps->p++;
			switch (*ps->p) {
			case '"': case '\\': case '/': *o++ = *ps->p; break;
			case 'n': *o++ = '\n'; break;
			case 't': *o++ = '\t'; break;
			case 'r': *o++ = '\r'; break;
			case 'b': *o++ = '\b'; break;
			case 'f': *o++ = '\f'; break;
			case 'u': {
				unsigned v;

				if (sscanf(ps->p + 1, "%4x", &v) != 1 || v > 0x7f)
					jfail(ps, "\\u escape (only ASCII expected)");
				*o++ = (char)v;
				ps->p += 4;
				break;
			}
			default: jfail(ps, "bad escape");
			}
			ps->p++;
			continue;
		}
		*o++ = (char)c;
		ps->p++;
	}
	ps->p++;
	*o++ = '\0';
	jstrused += (size_t)(o - out);
	cr_assert_lt(jstrused, sizeof(jstrings));
	return out;
}

static struct jv *jvalue(struct jparser *ps)
{
	struct jv *v;

	cr_assert_lt(jused, (int)(sizeof(jpool) / sizeof(jpool[0])), "JSON too large");
	v = &jpool[jused++];
	memset(v, 0, sizeof(*v));
	jspace(ps);
	if (*ps->p == '{' || *ps->p == '[') {
		bool obj = *ps->p == '{';
		char close = obj ? '}' : ']';
		struct jv **tail = &v->first;

		v->type = obj ? J_OBJ : J_ARR;
		ps->p++;
		jspace(ps);
		if (*ps->p == close) {
			ps->p++;
			return v;
		}
		for (;;) {
			const char *key = NULL;
			struct jv *e;

			if (obj) {
				jspace(ps);
				key = jstring(ps);
				for (struct jv *o = v->first; o; o = o->next)
					if (!strcmp(o->key, key))
						jfail(ps, "duplicate key");
				jspace(ps);
				if (*ps->p != ':')
					jfail(ps, "expected ':'");
				ps->p++;
			}
			e = jvalue(ps);
			e->key = key;
			*tail = e;
			tail = &e->next;
			v->count++;
			jspace(ps);
			if (*ps->p == ',') {
				ps->p++;
				continue;
			}
			if (*ps->p != close)
				jfail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
			ps->p++;
			return v;
		}
	}
	if (*ps->p == '"') {
		v->type = J_STR;
		v->str = jstring(ps);
		return v;
	}
	if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
		const char *s = ps->p;

		if (*ps->p == '-')
			ps->p++;
		if (*ps->p == '0' && ps->p[1] >= '0' && ps->p[1] <= '9')
			jfail(ps, "leading zero");
		if (*ps->p < '0' || *ps->p > '9')
			jfail(ps, "bad number");
		while (*ps->p >= '0' && *ps->p <= '9')
			ps->p++;
		if (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E')
			jfail(ps, "non-integer number");
		v->type = J_NUM;
		v->num = strtoll(s, NULL, 10);
		return v;
	}
	if (!strncmp(ps->p, "true", 4) || !strncmp(ps->p, "false", 5)) {
		v->type = J_BOOL;
		v->num = *ps->p == 't';
		ps->p += v->num ? 4 : 5;
		return v;
	}
	if (!strncmp(ps->p, "null", 4)) {
		ps->p += 4;
		return v;
	}
	jfail(ps, "unexpected character");
	return NULL;
}

/* Parse text, which must be exactly one JSON value (and white space). */
static struct jv *json_parse(const char *text)
{
	struct jparser ps = { text, text };
	struct jv *v;

	jused = 0;
	jstrused = 0;
	v = jvalue(&ps);
	jspace(&ps);
	if (*ps.p)
		jfail(&ps, "text after the value");
	return v;
}

/*
 * json_at(v, "ranges.1.location"): a member by key or an element by index,
 * one step per dot.  The value must exist.
 */
static struct jv *json_at(struct jv *v, const char *path)
{
	char buf[256], *save, *step;

	snprintf(buf, sizeof(buf), "%s", path);
	for (step = strtok_r(buf, ".", &save); step; step = strtok_r(NULL, ".", &save)) {
		struct jv *e = NULL;

		if (v->type == J_OBJ) {
			for (e = v->first; e && strcmp(e->key, step); e = e->next)
				;
		} else if (v->type == J_ARR) {
			int i = atoi(step);

			for (e = v->first; e && i > 0; e = e->next, i--)
				;
		}
		cr_assert_not_null(e, "JSON has no %s (at '%s')", path, step);
		v = e;
	}
	return v;
}

static long long jnum(struct jv *v, const char *path)
{
	struct jv *e = json_at(v, path);

	cr_assert_eq(e->type, J_NUM, "JSON %s is not a number", path);
	return e->num;
}

static const char *jstr(struct jv *v, const char *path)
{
	struct jv *e = json_at(v, path);

	cr_assert_eq(e->type, J_STR, "JSON %s is not a string", path);
	return e->str;
}

static int jcount(struct jv *v, const char *path, enum jtype type)
{
	struct jv *e = json_at(v, path);

	cr_assert_eq(e->type, type, "JSON %s is not an %s", path,
		     type == J_ARR ? "array" : "object");
	return e->count;
}

/* ---- the mount and its files ----------------------------------------------------- */

#define MOUNT_OPTS "host_mem=64M,devices=2,device_mem=16M,device_type=private:coherent,evict=none"

static void setup(void)
{
	mnt_setup_opts(MOUNT_OPTS);
}

TestSuite(hmmctl, .init = setup, .fini = mnt_teardown, .timeout = 60);

/* A file of npages pages of data at mp(rel); returns its fd (O_RDWR). */
static int data_file(const char *rel, long npages)
{
	int fd = create_file(rel);

	write_pattern(fd, 0, (size_t)(npages * page()), 7);
	return fd;
}

/* Move pages [first, first + n) of fd to dest through libhmm itself. */
static void move_pages(int fd, long first, long n, int dest)
{
	struct hmm_migrate m;
	int err = hmm_file_migrate(fd, (uint64_t)(first * page()), (uint64_t)(n * page()), dest, &m);

	cr_assert_eq(err, 0, "hmm_file_migrate(%ld+%ld -> %d): %s", first, n, dest,
		     strerror(-err));
	cr_assert_eq(m.moved, (uint64_t)n, "moved %llu of %ld pages",
		     (unsigned long long)m.moved, n);
}

/*
 * The layout most tests use, in pages: 0-3 host, 4-7 dev0, 8-11 dev1,
 * 12-15 host, 16-23 a hole, and the size ends half-way into page 24 (data).
 */
static int layout_file(const char *rel)
{
	int fd = data_file(rel, 16);

	write_pattern(fd, 24 * page(), (size_t)page() / 2, 8);
	move_pages(fd, 4, 4, 0);
	move_pages(fd, 8, 4, 1);
	return fd;
}

/* ---- help, version and bad usage ------------------------------------------------- */

TestSuite(cli);

Test(cli, help_prints_usage_on_stdout_and_exits_0)
{
	static const char *const forms[] = { "-h", "--help" };
	struct run *r = new_run();

	for (size_t i = 0; i < 2; i++) {
		run(r, forms[i]);
		expect_ok(r);
		cr_assert(!strncmp(r->out, "Usage:\n hmmctl ", 15), "%s: %s", forms[i], r->out);
		for (const char *const *c = (const char *const[]){ "devices", "residency",
				"migrate", "stat", NULL }; *c; c++)
			cr_assert_not_null(strstr(r->out, *c), "%s does not mention %s", forms[i], *c);
	}
	free(r);
}

Test(cli, version_prints_hmmctl_from_hmmfs_and_the_package_version)
{
	static const char *const forms[] = { "-V", "--version" };
	struct run *r = new_run();

	for (size_t i = 0; i < 2; i++) {
		run(r, forms[i]);
		expect_ok(r);
		cr_assert_str_eq(r->out, "hmmctl from hmmfs " PACKAGE_VERSION "\n");
	}
	free(r);
}

Test(cli, each_command_has_its_own_help)
{
	static const char *const cmds[] = { "devices", "residency", "migrate", "stat" };
	struct run *r = new_run();

	for (size_t i = 0; i < 4; i++) {
		char want[64];

		run(r, cmds[i], "--help");
		expect_ok(r);
		snprintf(want, sizeof(want), "Usage:\n hmmctl %s ", cmds[i]);
		cr_assert(!strncmp(r->out, want, strlen(want)), "%s --help: %s", cmds[i], r->out);
		run(r, cmds[i], "-h");
		expect_ok(r);
		cr_assert(!strncmp(r->out, want, strlen(want)), "%s -h: %s", cmds[i], r->out);
	}
	free(r);
}

/*
 * The strings are held in the struct, not pointed to: Criterion hands each
 * test a copy of its parameter in a process of its own, where pointers into
 * this program's data may not be valid (they are not when the test runs
 * through libtool's wrapper).
 */
struct bad_usage {
	char args[80];     /* separated by single spaces */
	char message[96];  /* the first line, after "hmmctl: " */
};


ParameterizedTestParameters(cli, bad_usage_prints_one_line_and_a_hint_and_exits_2)
{
	static struct bad_usage bad_usages[] = {
		{ "", "no command given" },
		{ "frobnicate /x", "unknown command 'frobnicate'" },
		{ "--frob", "unrecognized option '--frob'" },
		{ "-x", "invalid option -- 'x'" },
		{ "residency", "residency: no file given" },
		{ "devices", "devices: no mount point given" },
		{ "stat", "stat: no path given" },
		{ "migrate /x", "migrate: no destination given (--to host or --to devN)" },
		{ "residency /x --frob", "unrecognized option '--frob'" },
		{ "residency /x /y", "residency: unexpected argument '/y'" },
		{ "residency /x --json=1", "option '--json' doesn't allow an argument" },
		{ "residency /x --map --json",
		  "residency: --map and --json cannot be used together" },
		{ "devices /x --map", "devices: option '--map' does not apply to this command" },
		{ "migrate /x --json --to host",
		  "migrate: option '--json' does not apply to this command" },
		{ "migrate /x --to", "option '--to' requires an argument" },
		{ "migrate /x -t", "option '-t' requires an argument" },
		{ "migrate /x --to gpu", "invalid destination 'gpu': expected host or devN" },
		{ "migrate /x --to dev", "invalid destination 'dev': expected host or devN" },
		{ "migrate /x --to dev-1", "invalid destination 'dev-1': expected host or devN" },
		{ "migrate /x --to host --offset 4Q",
		  "invalid offset '4Q': expected a size such as 4096 or 2M" },
		{ "migrate /x --to host --length -4096",
		  "invalid length '-4096': expected a size such as 4096 or 2M" },
		{ "migrate /x --to host --length 99999999999999999999",
		  "invalid length '99999999999999999999': expected a size such as 4096 or 2M" },
	};

	return cr_make_param_array(struct bad_usage, bad_usages,
				   sizeof(bad_usages) / sizeof(bad_usages[0]));
}

ParameterizedTest(struct bad_usage *u, cli, bad_usage_prints_one_line_and_a_hint_and_exits_2)
{
	struct run *r = new_run();
	char want[512];

	char buf[256], *argv[16], *save;
	int n = 0;

	snprintf(buf, sizeof(buf), "%s", u->args);
	for (char *a = strtok_r(buf, " ", &save); a && n < 15; a = strtok_r(NULL, " ", &save))
		argv[n++] = a;
	argv[n] = NULL;
	run_argv(r, (const char *const *)argv);
	snprintf(want, sizeof(want), "hmmctl: %s\n" HINT, u->message);
	cr_assert_eq(r->status, 2, "exit %d, stderr: %s", r->status, r->err);
	cr_assert_str_eq(r->err, want);
	cr_assert_str_empty(r->out);
	free(r);
}

/* ---- devices ----------------------------------------------------------------------- */

Test(hmmctl, devices_table_has_a_row_per_device_with_type_and_capacity)
{
	struct run *r = new_run();
	const char *row;

	run(r, "devices", mnt.dir);
	expect_ok(r);
	cr_assert_eq(count_lines(r->out), 3, "%s", r->out);
	cr_assert(!strncmp(line_of(r->out, 0), "DEVICE  TYPE", 12), "%s", r->out);
	cr_assert_not_null(strstr(line_of(r->out, 0), "CPU-FAULTS"), "%s", r->out);
	row = line_of(r->out, 1);
	cr_assert(!strncmp(row, "dev0    private", 15), "%s", row);
	cr_assert_not_null(strstr(row, "16 MiB"), "%s", row);
	row = line_of(r->out, 2);
	cr_assert(!strncmp(row, "dev1    coherent", 16), "%s", row);
	free(r);
}

Test(hmmctl, devices_json_counts_a_migration_in_and_out)
{
	struct run *r = new_run();
	int fd = data_file("f", 8);
	struct jv *j;

	move_pages(fd, 0, 8, 1);
	move_pages(fd, 0, 2, HMM_LOC_HOST);
	run(r, "devices", mnt.dir, "--json");
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "devices", J_ARR), 2);
	cr_assert_eq(jnum(j, "devices.0.index"), 0);
	cr_assert_str_eq(jstr(j, "devices.0.name"), "dev0");
	cr_assert_str_eq(jstr(j, "devices.0.type"), "private");
	cr_assert_eq(jnum(j, "devices.0.capacity"), 16 * MIB);
	cr_assert_eq(jnum(j, "devices.0.used"), 0);
	cr_assert_eq(jnum(j, "devices.0.pages_in"), 0);
	cr_assert_str_eq(jstr(j, "devices.1.type"), "coherent");
	cr_assert_eq(jnum(j, "devices.1.used"), 6 * page());
	cr_assert_eq(jnum(j, "devices.1.pages_in"), 8);
	cr_assert_eq(jnum(j, "devices.1.bytes_in"), 8 * page());
	cr_assert_eq(jnum(j, "devices.1.pages_out"), 2);
	cr_assert_eq(jnum(j, "devices.1.bytes_out"), 2 * page());
	cr_assert_eq(jnum(j, "devices.1.cpu_faults"), 0);
	cr_assert_eq(jnum(j, "devices.1.evictions"), 0);
	cr_assert_eq(jnum(j, "devices.1.dma_engines"), 1);
	cr_assert_eq(jnum(j, "devices.1.dma_bw"), 0);
	cr_assert_eq(jnum(j, "devices.1.dma_latency_ns"), 0);
	cr_assert_gt(jnum(j, "devices.1.dma_busy_ns"), 0);
	cr_assert_eq(jnum(j, "devices.1.numa_node"), -1);
	close(fd);
	free(r);
}

Test(hmmctl, devices_on_a_mount_without_devices_says_there_are_none)
{
	struct hmmfs_test_mount m;
	struct run *r = new_run();
	struct jv *j;
	char want[128];

	cr_assert_eq(hmmfs_test_mount(&m, "host_mem=4M"), 0);
	run(r, "devices", m.dir);
	expect_ok(r);
	snprintf(want, sizeof(want), "%s has no devices (mount it with -o devices=N)\n", m.dir);
	cr_assert_str_eq(r->out, want);
	run(r, "devices", "--json", m.dir);
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "devices", J_ARR), 0);
	cr_assert_eq(hmmfs_test_umount(&m), 0);
	free(r);
}

Test(hmmctl, devices_off_hmmfs_fails_with_not_an_hmmfs_mount)
{
	struct run *r = new_run();

	run(r, "devices", "/");
	expect_failure(r, "/ is not on an hmmfs mount");
	run(r, "devices", mp("nonexistent"));
	cr_assert_eq(r->status, 1);
	cr_assert_not_null(strstr(r->err, "No such file or directory"), "%s", r->err);
	free(r);
}

/* ---- residency ---------------------------------------------------------------------- */

Test(hmmctl, residency_json_covers_the_file_with_every_location)
{
	struct run *r = new_run();
	int fd = layout_file("f");
	long pg = page();
	struct jv *j;
	static const struct { long first, n; const char *loc; } want[] = {
		{ 0, 4, "host" }, { 4, 4, "dev0" }, { 8, 4, "dev1" },
		{ 12, 4, "host" }, { 16, 8, "hole" }, { 24, 0, "host" },
	};

	run(r, "residency", "--json", mp("f"));
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "", J_OBJ), 3, "%s", r->out);
	cr_assert_eq(jnum(j, "size"), 24 * pg + pg / 2);
	cr_assert_eq(jnum(j, "page_size"), pg);
	cr_assert_eq(jcount(j, "ranges", J_ARR), 6, "%s", r->out);
	for (int i = 0; i < 6; i++) {
		char path[64];

		snprintf(path, sizeof(path), "ranges.%d.offset", i);
		cr_assert_eq(jnum(j, path), want[i].first * pg, "%s", path);
		snprintf(path, sizeof(path), "ranges.%d.length", i);
		cr_assert_eq(jnum(j, path), want[i].n ? want[i].n * pg : pg / 2, "%s", path);
		snprintf(path, sizeof(path), "ranges.%d.location", i);
		cr_assert_str_eq(jstr(j, path), want[i].loc, "%s", path);
	}
	close(fd);
	free(r);
}

Test(hmmctl, residency_json_of_a_file_of_more_ranges_than_one_call_returns)
{
	struct run *r = new_run();
	int n = 2 * HMM_RESIDENCY_RANGES + 10; /* pages, alternating host and dev1 */
	int fd = data_file("f", n);
	struct jv *j;

	for (int i = 1; i < n; i += 2)
		move_pages(fd, i, 1, 1);
	run(r, "residency", mp("f"), "--json");
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "ranges", J_ARR), n);
	for (int i = 0; i < n; i++) {
		char path[64];

		snprintf(path, sizeof(path), "ranges.%d.offset", i);
		cr_assert_eq(jnum(j, path), i * page());
		snprintf(path, sizeof(path), "ranges.%d.location", i);
		cr_assert_str_eq(jstr(j, path), i % 2 ? "dev1" : "host");
	}
	close(fd);
	free(r);
}

Test(hmmctl, residency_table_lists_ranges_with_human_sizes)
{
	struct run *r = new_run();
	int fd = data_file("f", 3 * MIB / page());

	cr_assert_eq(ftruncate(fd, 4 * MIB), 0);
	cr_assert_eq(hmm_file_migrate(fd, MIB, MIB, 0, NULL), 0);
	run(r, "residency", mp("f"));
	expect_ok(r);
	cr_assert_str_eq(r->out, "OFFSET  LENGTH  PAGES  LOCATION\n"
				 "     0   1 MiB    256  host\n"
				 " 1 MiB   1 MiB    256  dev0\n"
				 " 2 MiB   1 MiB    256  host\n"
				 " 3 MiB   1 MiB    256  hole\n",
			 "got:\n%s", r->out);
	run(r, "residency", "--bytes", mp("f"));
	expect_ok(r);
	cr_assert_str_eq(line_of(r->out, 2), "1048576  1048576    256  dev0", "got:\n%s", r->out);
	close(fd);
	free(r);
}

Test(hmmctl, residency_of_an_empty_file_says_so)
{
	struct run *r = new_run();
	struct jv *j;
	char want[128];

	close(create_file("e"));
	run(r, "residency", mp("e"));
	expect_ok(r);
	snprintf(want, sizeof(want), "%s is empty\n", mp("e"));
	cr_assert_str_eq(r->out, want);
	run(r, "residency", mp("e"), "--json");
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jnum(j, "size"), 0);
	cr_assert_eq(jcount(j, "ranges", J_ARR), 0);
	free(r);
}

Test(hmmctl, residency_map_shows_one_character_per_page_when_it_fits)
{
	struct run *r = new_run();
	int fd = layout_file("f");
	char want[256];

	run(r, "residency", "--map", mp("f"));
	expect_ok(r);
	cr_assert_eq(count_lines(r->out), 4, "%s", r->out);
	snprintf(want, sizeof(want), "%s: %s in 25 pages of 4 KiB, 1 page per character",
		 mp("f"), "98 KiB");
	cr_assert_str_eq(line_of(r->out, 0), want);
	cr_assert_str_eq(line_of(r->out, 1), "HHHH00001111HHHH........H");
	snprintf(want, sizeof(want), "0%24s", "98 KiB"); /* the size under the last page */
	cr_assert_str_eq(line_of(r->out, 2), want);
	cr_assert_str_eq(line_of(r->out, 3), ". hole  H host  0 dev0  1 dev1");
	close(fd);
	free(r);
}

Test(hmmctl, residency_map_groups_pages_and_marks_mixed_groups)
{
	struct run *r = new_run();
	int fd = data_file("f", 66);
	char want[256];

	/* 128 pages, 2 per character on 64 columns: 0-63 host, 64 dev0 and 65
	 * host (mixed), 66-125 holes, 126 a hole and 127 host (data wins). */
	write_pattern(fd, 127 * page(), (size_t)page(), 9);
	move_pages(fd, 64, 1, 0);
	run(r, "residency", "--map", mp("f"));
	expect_ok(r);
	snprintf(want, sizeof(want), "%s: 512 KiB in 128 pages of 4 KiB, 2 pages (8 KiB) per character",
		 mp("f"));
	cr_assert_str_eq(line_of(r->out, 0), want);
	memset(want, 'H', 32);
	want[32] = '*';
	memset(want + 33, '.', 30);
	strcpy(want + 63, "H");
	cr_assert_str_eq(line_of(r->out, 1), want);
	/* dev0 shows only inside the mixed group, so the legend leaves it out. */
	cr_assert_str_eq(line_of(r->out, 3), ". hole  H host  * mixed");
	close(fd);
	free(r);
}

Test(hmmctl, residency_off_hmmfs_or_of_a_directory_fails)
{
	struct run *r = new_run();
	char path[] = "/tmp/hmmctl-test.XXXXXX";
	char want[128];
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);
	run(r, "residency", path);
	snprintf(want, sizeof(want), "%s is not on an hmmfs mount", path);
	unlink(path);
	expect_failure(r, want);
	run(r, "residency", mnt.dir);
	snprintf(want, sizeof(want), "%s is not a regular file", mnt.dir);
	expect_failure(r, want);
	run(r, "residency", mp("missing"));
	snprintf(want, sizeof(want), "cannot open %s: No such file or directory", mp("missing"));
	expect_failure(r, want);
	free(r);
}

/* ---- migrate ------------------------------------------------------------------------- */

Test(hmmctl, migrate_moves_the_whole_file_and_residency_shows_it)
{
	struct run *r = new_run();
	int fd = data_file("f", 512);
	struct jv *j;

	cr_assert_eq(ftruncate(fd, 1024 * page()), 0);
	run(r, "migrate", mp("f"), "--to", "dev0");
	expect_ok(r);
	cr_assert_str_eq(r->out, "moved 512 pages (2 MiB) to dev0, 0 already there\n");
	run(r, "residency", "--json", mp("f"));
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "ranges", J_ARR), 2, "%s", r->out);
	cr_assert_str_eq(jstr(j, "ranges.0.location"), "dev0");
	cr_assert_eq(jnum(j, "ranges.0.length"), 512 * page());
	cr_assert_str_eq(jstr(j, "ranges.1.location"), "hole");

	run(r, "migrate", mp("f"), "--to", "dev0");
	expect_ok(r);
	cr_assert_str_eq(r->out, "moved 0 pages (0 B) to dev0, 512 already there\n");

	run(r, "migrate", "--to", "host", mp("f"));
	expect_ok(r);
	cr_assert_str_eq(r->out, "moved 512 pages (2 MiB) to host, 0 already there\n");
	run(r, "residency", "--json", mp("f"));
	j = json_parse(r->out);
	cr_assert_str_eq(jstr(j, "ranges.0.location"), "host");
	expect_pattern(fd, 0, (size_t)(512 * page()), 7);
	close(fd);
	free(r);
}

Test(hmmctl, migrate_a_range_given_with_suffixes)
{
	struct run *r = new_run();
	int fd = data_file("f", 8);
	struct jv *j;

	cr_assert_eq(page(), 4096, "this test assumes 4 KiB pages");
	run(r, "migrate", mp("f"), "--to", "dev1", "--offset", "8K", "--length", "12k");
	expect_ok(r);
	cr_assert_str_eq(r->out, "moved 3 pages (12 KiB) to dev1, 0 already there\n");
	run(r, "migrate", mp("f"), "-t", "dev1", "-o", "4096", "-l", "8192");
	expect_ok(r);
	cr_assert_str_eq(r->out, "moved 1 page (4 KiB) to dev1, 1 already there\n");
	run(r, "residency", "--json", mp("f"));
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "ranges", J_ARR), 3, "%s", r->out);
	cr_assert_eq(jnum(j, "ranges.1.offset"), 4096);
	cr_assert_eq(jnum(j, "ranges.1.length"), 4 * 4096);
	cr_assert_str_eq(jstr(j, "ranges.1.location"), "dev1");
	cr_assert_str_eq(jstr(j, "ranges.2.location"), "host");
	close(fd);
	free(r);
}

Test(hmmctl, migrate_to_a_missing_device_fails_with_enodev_message)
{
	struct run *r = new_run();
	int fd = data_file("f", 2);

	run(r, "migrate", mp("f"), "--to", "dev2");
	expect_failure(r, "no device dev2 on this mount");
	run(r, "migrate", mp("f"), "--to", "dev4000000");
	expect_failure(r, "no device dev4000000 on this mount");
	close(fd);
	free(r);
}

Test(hmmctl, migrate_of_a_misaligned_range_explains_the_page_size)
{
	struct run *r = new_run();
	int fd = data_file("f", 4);
	char want[128];

	run(r, "migrate", mp("f"), "--to", "dev0", "--offset", "100");
	snprintf(want, sizeof(want), "offset 100 must be a multiple of the page size (%ld)", page());
	expect_failure(r, want);
	run(r, "migrate", mp("f"), "--to", "dev0", "--length", "6000");
	snprintf(want, sizeof(want), "length 6000 must be a multiple of the page size (%ld)", page());
	expect_failure(r, want);
	cr_assert_eq(hmm_device_info(fd, 0, &(struct hmm_device_info){ 0 }), 0);
	close(fd);
	free(r);
}

Test(hmmctl, migrate_that_does_not_fit_fails_with_enospc_and_moves_nothing)
{
	struct run *r = new_run();
	int fd = data_file("f", 20 * MIB / page()); /* the devices hold 16 MiB */
	struct hmm_device_info info;
	struct jv *j;

	run(r, "migrate", mp("f"), "--to", "dev0");
	expect_failure(r, "not enough room on dev0; nothing was moved");
	cr_assert_eq(hmm_device_info(fd, 0, &info), 0);
	cr_assert_eq(info.used, 0);
	run(r, "residency", "--json", mp("f"));
	j = json_parse(r->out);
	cr_assert_eq(jcount(j, "ranges", J_ARR), 1);
	cr_assert_str_eq(jstr(j, "ranges.0.location"), "host");
	close(fd);
	free(r);
}

Test(hmmctl, migrate_of_a_file_off_hmmfs_fails_with_enotty_message)
{
	struct run *r = new_run();
	char path[] = "/tmp/hmmctl-test.XXXXXX";
	char want[128];
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "x", 1), 1);
	close(fd);
	run(r, "migrate", path, "--to", "dev0");
	unlink(path);
	snprintf(want, sizeof(want), "%s is not on an hmmfs mount", path);
	expect_failure(r, want);
	free(r);
}

/* ---- stat --------------------------------------------------------------------------- */

Test(hmmctl, stat_of_a_file_counts_bytes_per_location)
{
	struct run *r = new_run();
	int fd = layout_file("f");
	long pg = page();
	struct jv *j;
	char want[256];

	run(r, "stat", "--json", mp("f"));
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_str_eq(jstr(j, "path"), mp("f"));
	cr_assert_str_eq(jstr(j, "type"), "file");
	cr_assert_eq(jnum(j, "size"), 24 * pg + pg / 2);
	cr_assert_eq(jnum(j, "page_size"), pg);
	cr_assert_eq(jnum(j, "pages"), 25);
	cr_assert_eq(jnum(j, "hole.pages"), 8);
	cr_assert_eq(jnum(j, "hole.bytes"), 8 * pg);
	cr_assert_eq(jnum(j, "host.pages"), 9);
	cr_assert_eq(jnum(j, "host.bytes"), 8 * pg + pg / 2);
	cr_assert_eq(jcount(j, "devices", J_ARR), 2);
	cr_assert_str_eq(jstr(j, "devices.0.name"), "dev0");
	cr_assert_eq(jnum(j, "devices.0.pages"), 4);
	cr_assert_eq(jnum(j, "devices.0.bytes"), 4 * pg);
	cr_assert_eq(jnum(j, "devices.1.index"), 1);
	cr_assert_eq(jnum(j, "devices.1.pages"), 4);

	run(r, "stat", mp("f"));
	expect_ok(r);
	snprintf(want, sizeof(want), "File: %s", mp("f"));
	cr_assert_str_eq(line_of(r->out, 0), want);
	cr_assert_str_eq(line_of(r->out, 1), "Size: 98 KiB (100352 bytes), 25 pages of 4 KiB");
	cr_assert_str_eq(line_of(r->out, 3), "LOCATION  PAGES   BYTES");
	cr_assert_str_eq(line_of(r->out, 4), "hole          8  32 KiB");
	cr_assert_str_eq(line_of(r->out, 5), "host          9  34 KiB");
	cr_assert_str_eq(line_of(r->out, 6), "dev0          4  16 KiB");
	cr_assert_str_eq(line_of(r->out, 7), "dev1          4  16 KiB");
	cr_assert_str_eq(line_of(r->out, 9), "Migrated to devices: 8 pages (32 KiB)");
	cr_assert_str_eq(line_of(r->out, 10),
			 "Migrated to host:    0 pages (0 B), of which CPU faults 0, evictions 0");
	close(fd);
	free(r);
}

Test(hmmctl, stat_of_a_file_counts_its_migrations_and_cpu_faults)
{
	struct run *r = new_run();
	int fd = layout_file("f");
	long pg = page();
	char c;
	struct jv *j;

	/* Read one page of dev0 (private) back: a CPU fault of at least that page. */
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
	cr_assert_eq(pread(fd, &c, 1, 5 * pg), 1);
	run(r, "stat", "--json", mp("f"));
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_eq(jnum(j, "counters.pages_to_device"), 8);
	cr_assert_eq(jnum(j, "counters.bytes_to_device"), 8 * pg);
	cr_assert_geq(jnum(j, "counters.cpu_faults"), 1);
	cr_assert_eq(jnum(j, "counters.pages_to_host"), jnum(j, "counters.cpu_faults"));
	cr_assert_eq(jnum(j, "counters.bytes_to_host"), jnum(j, "counters.cpu_faults") * pg);
	cr_assert_eq(jnum(j, "counters.evictions"), 0);
	cr_assert_eq(jnum(j, "devices.0.pages"), 4 - jnum(j, "counters.cpu_faults"));
	close(fd);
	free(r);
}

Test(hmmctl, stat_of_the_mount_point_reports_host_memory_and_devices)
{
	struct run *r = new_run();
	int fd = data_file("f", 16);
	struct jv *j;

	move_pages(fd, 0, 4, 0);
	run(r, "stat", "--json", mnt.dir);
	expect_ok(r);
	j = json_parse(r->out);
	cr_assert_str_eq(jstr(j, "type"), "mount");
	cr_assert_eq(jnum(j, "page_size"), page());
	cr_assert_eq(jnum(j, "host.capacity"), 64 * MIB);
	cr_assert_eq(jnum(j, "host.used"), 12 * page());
	cr_assert_eq(jnum(j, "host.free"), 64 * MIB - 12 * page());
	cr_assert_eq(jnum(j, "inodes.used"), 2);
	cr_assert_eq(jcount(j, "devices", J_ARR), 2);
	cr_assert_eq(jnum(j, "devices.0.used"), 4 * page());
	cr_assert_eq(jnum(j, "devices.0.pages_in"), 4);
	cr_assert_str_eq(jstr(j, "devices.1.type"), "coherent");

	run(r, "stat", mnt.dir);
	expect_ok(r);
	cr_assert_not_null(strstr(r->out, "Host memory: 48 KiB used of 64 MiB"), "%s", r->out);
	cr_assert_not_null(strstr(r->out, "Devices: 2\n"), "%s", r->out);
	cr_assert_not_null(strstr(r->out, "\ndev0    private"), "%s", r->out);
	close(fd);
	free(r);
}

Test(hmmctl, stat_off_hmmfs_fails)
{
	struct run *r = new_run();

	run(r, "stat", "/");
	expect_failure(r, "/ is not on an hmmfs mount");
	run(r, "stat", "/dev/null");
	expect_failure(r, "/dev/null is neither a regular file nor a directory");
	free(r);
}
