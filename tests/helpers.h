/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - small utilities the Criterion test programs share: paths in
 * the mount, assertions on a call's result and errno, creating and
 * inspecting files, running a check as an unprivileged user, timestamps,
 * and the data pattern written to and read back from files.  Every helper
 * that checks something fails the current test through Criterion.
 */
#ifndef HMMFS_TEST_HELPERS_H
#define HMMFS_TEST_HELPERS_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- paths and results --------------------------------------------------- */

/*
 * A path inside the mount, formatted.  Eight rotating buffers per thread,
 * so that one call such as rename(at("a"), at("b")) can use several; each
 * holds a bit more than PATH_MAX, so that paths too long for the kernel can
 * be built too.
 */
const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The call must fail with exactly err. */
#define assert_fails(expr, err)                                                          \
	do {                                                                             \
		errno = 0;                                                               \
		long r_ = (long)(expr);                                                  \
		int e_ = errno;                                                          \
		cr_assert_eq(r_, -1, "%s succeeded (%ld), expected %s", #expr, r_,       \
			     strerrorname_np(err));                                      \
		cr_assert_eq(e_, (err), "%s: expected %s, got %s", #expr,                \
			     strerrorname_np(err), strerrorname_np(e_));                 \
	} while (0)

/* The call must succeed (return >= 0). */
#define assert_ok(expr)                                                                  \
	do {                                                                             \
		errno = 0;                                                               \
		long r_ = (long)(expr);                                                  \
		cr_assert_geq(r_, 0, "%s failed: %s", #expr, strerrorname_np(errno));    \
	} while (0)

/* qsort comparator for an array of C strings. */
int cmp_str(const void *a, const void *b);

/* ---- files by path --------------------------------------------------------- */

/* Create (or truncate) path with mode 0644 and write content into it, if any. */
void make_file(const char *path, const char *content);

/* lstat(path), which must succeed. */
struct stat stat_of(const char *path);

/* ---- files by descriptor, and their data ----------------------------------- */

/* The system page size. */
long page(void);

/* Create mp(rel) for reading and writing; it must not exist yet. */
int create_file(const char *rel);

/* fstat(fd), which must succeed. */
struct stat fd_stat(int fd);

/* pwrite len bytes of pattern_fill(seed) at off; all must be written. */
void write_pattern(int fd, long long off, size_t len, unsigned seed);

/* pread len bytes at off; all must be read and carry pattern_fill(seed). */
void expect_pattern(int fd, long long off, size_t len, unsigned seed);

/* lseek(fd, from, whence) must return want, or fail with ENXIO if want < 0. */
void expect_seek(int fd, long long from, int whence, long long want);

/* ---- the machine ------------------------------------------------------------- */

/* The size of a transparent huge page (PMD), 2 MiB if the kernel does not say. */
size_t thp_pmd_size(void);

/* The number after field ("HugePages_Free:") in /proc/meminfo, or 0. */
unsigned long meminfo_field(const char *field);

/* ---- another user ------------------------------------------------------------ */

#define NOBODY 65534

/*
 * Run fn(path) in a child that dropped to uid and gid 65534 with no
 * supplementary groups.  Return: 0 if fn succeeded, else the errno it left.
 */
int as_nobody(int (*fn)(const char *), const char *path);

/* fn(path) run as NOBODY must fail with exactly err, or succeed if err is 0. */
#define assert_nobody_gets(fn, path, err)                                                \
	do {                                                                             \
		int e_ = as_nobody(fn, path);                                            \
		cr_assert_eq(e_, (err), "uid %d %s(%s): expected %s, got %s", NOBODY,    \
			     #fn, path, (err) ? strerrorname_np(err) : "success",        \
			     e_ ? strerrorname_np(e_) : "success");                      \
	} while (0)

/* ---- workers in other processes ------------------------------------------ */

/* len bytes of zeroed memory shared with the children forked after this call. */
void *shared_zalloc(size_t len);

/* A barrier for count threads, in shared memory, usable across processes. */
pthread_barrier_t *shared_barrier(unsigned count);

/*
 * Failures seen by worker threads or processes (placed in shared memory for
 * the latter), for the test process to assert on: a count and the first
 * message.
 */
struct report {
	int errors;
	char first[1024];
};

/* Count a failure; the first one's message is kept.  Safe from any thread. */
void report_fail(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The workers must have reported no failure. */
void expect_no_failures(const struct report *r);

/* ---- running commands ---------------------------------------------------- */

#define RUN_OUT_MAX 65536

/* What run_cmd() saw: stdout and stderr (NUL-terminated, cut at
 * RUN_OUT_MAX - 1 bytes) and how the command ended. */
struct run {
	int status;     /* exit code; 128 + signal if killed; -1 if it timed out */
	char out[RUN_OUT_MAX];
	size_t outlen;
	char err[RUN_OUT_MAX];
	size_t errlen;
};

/*
 * run_cmd() - run file (a path, or a name looked up in PATH) with argv, and
 * envp or this environment if NULL; stdin from /dev/null, stdout and stderr
 * into r.  Waits at most timeout_ms for it to exit, then kills it.  A daemon
 * it leaves behind may keep the pipes open: once it has exited, what it
 * wrote is drained without waiting for EOF.
 */
void run_cmd(const char *file, char *const argv[], char *const envp[], int timeout_ms,
	     struct run *r);

/* ---- ThreadSanitizer ------------------------------------------------------------ */

/*
 * The sanitizers' runtimes cannot follow a child of fork() in a threaded
 * process (Criterion's test process always is) that starts threads of its
 * own.  ThreadSanitizer's thread registry keeps the parent's threads, whose
 * ids the child's new ones may reuse.  AddressSanitizer's (GCC 12's) has no
 * fork handlers: a lock of its allocator or thread registry that another
 * thread held at the fork stays held in the child, whose new threads then
 * wait for it forever (seen about once in ten runs of a fork scenario).
 * A test whose children start threads (making or attaching a device does)
 * calls this first: in sanitizer builds only, it is skipped with that
 * reason.
 */
void skip_under_sanitizers_if_children_start_threads(void);

/* ---- time -------------------------------------------------------------------- */

/* Compare two timestamps: -1, 0 or 1 as a is before, equal to or after b. */
int ts_cmp(struct timespec a, struct timespec b);

/*
 * Let the clocks move past every timestamp set so far: ctime cannot be set
 * back, so "ctime changed" can only be seen by time passing.
 */
void let_time_pass(void);

#endif
