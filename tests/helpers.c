/* SPDX-License-Identifier: MIT */
/* Small utilities the Criterion test programs share; see helpers.h. */
#include "config.h"
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- paths and results --------------------------------------------------- */

const char *at(const char *fmt, ...)
{
	static __thread char bufs[8][PATH_MAX + 512];
	static __thread unsigned next;
	char *buf = bufs[next++ % 8];
	int n = snprintf(buf, sizeof(bufs[0]), "%s/", mnt.dir);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(bufs[0]) - n, fmt, ap);
	va_end(ap);
	return buf;
}

int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- files by path --------------------------------------------------------- */

void make_file(const char *path, const char *content)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);

	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	if (content)
		cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

struct stat stat_of(const char *path)
{
	struct stat st;

	cr_assert_eq(lstat(path, &st), 0, "lstat %s: %s", path, strerror(errno));
	return st;
}

/* ---- files by descriptor, and their data ----------------------------------- */

long page(void)
{
	return sysconf(_SC_PAGESIZE);
}

int create_file(const char *rel)
{
	int fd = open(mp(rel), O_RDWR | O_CREAT | O_EXCL, 0644);

	cr_assert_geq(fd, 0, "create %s: %s", rel, strerror(errno));
	return fd;
}

struct stat fd_stat(int fd)
{
	struct stat st;

	cr_assert_eq(fstat(fd, &st), 0, "fstat: %s", strerror(errno));
	return st;
}

void write_pattern(int fd, long long off, size_t len, unsigned seed)
{
	unsigned char *buf = malloc(len ? len : 1);
	ssize_t n;

	cr_assert_not_null(buf);
	pattern_fill(buf, len, off, seed);
	n = pwrite(fd, buf, len, off);
	cr_assert_eq(n, (ssize_t)len, "pwrite(%zu bytes at %lld) returned %zd (%s)", len, off, n,
		     n < 0 ? strerror(errno) : "short");
	free(buf);
}

void expect_pattern(int fd, long long off, size_t len, unsigned seed)
{
	unsigned char *buf = malloc(len ? len : 1);
	ssize_t n;
	long long bad;

	cr_assert_not_null(buf);
	n = pread(fd, buf, len, off);
	cr_assert_eq(n, (ssize_t)len, "pread(%zu bytes at %lld) returned %zd (%s)", len, off, n,
		     n < 0 ? strerror(errno) : "short");
	bad = pattern_check(buf, len, off, seed);
	free(buf);
	cr_assert_eq(bad, -1, "byte at %lld differs from the pattern written (seed %u)",
		     off + bad, seed);
}

void expect_seek(int fd, long long from, int whence, long long want)
{
	off_t got = lseek(fd, from, whence);

	if (want < 0) {
		cr_assert_eq(got, -1, "lseek(%lld, %s) returned %lld, expected ENXIO", from,
			     whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE", (long long)got);
		cr_assert_eq(errno, ENXIO);
	} else {
		cr_assert_eq(got, want, "lseek(%lld, %s) returned %lld (%s), expected %lld", from,
			     whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE", (long long)got,
			     got < 0 ? strerror(errno) : "ok", want);
	}
}

/* ---- another user ------------------------------------------------------------ */

int as_nobody(int (*fn)(const char *), const char *path)
{
	pid_t pid = fork();
	int status;

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (setgroups(0, NULL) || setresgid(NOBODY, NOBODY, NOBODY) ||
		    setresuid(NOBODY, NOBODY, NOBODY))
			_exit(255);
		errno = 0;
		if (fn(path) < 0)
			_exit(errno ? errno : 254);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "child died (status %#x)", status);
	cr_assert_neq(WEXITSTATUS(status), 255, "child could not drop privileges");
	return WEXITSTATUS(status);
}

/* ---- workers in other processes ------------------------------------------ */

void *shared_zalloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
	return p;
}

pthread_barrier_t *shared_barrier(unsigned count)
{
	pthread_barrierattr_t attr;
	pthread_barrier_t *b = shared_zalloc(sizeof(*b));

	pthread_barrierattr_init(&attr);
	pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	cr_assert_eq(pthread_barrier_init(b, &attr, count), 0);
	pthread_barrierattr_destroy(&attr);
	return b;
}

void report_fail(struct report *r, const char *fmt, ...)
{
	va_list ap;

	if (__atomic_fetch_add(&r->errors, 1, __ATOMIC_SEQ_CST) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(r->first, sizeof(r->first), fmt, ap);
	va_end(ap);
}

void expect_no_failures(const struct report *r)
{
	cr_assert_eq(r->errors, 0, "%d failures; the first: %s", r->errors, r->first);
}

/* ---- time -------------------------------------------------------------------- */

int ts_cmp(struct timespec a, struct timespec b)
{
	if (a.tv_sec != b.tv_sec)
		return a.tv_sec < b.tv_sec ? -1 : 1;
	if (a.tv_nsec != b.tv_nsec)
		return a.tv_nsec < b.tv_nsec ? -1 : 1;
	return 0;
}

void let_time_pass(void)
{
	struct timespec ts = { 0, 15 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000L;
}

/* ---- running commands -------------------------------------------------- */

static void drain(int fd, char *buf, size_t *len, bool *eof)
{
	while (!*eof) {
		ssize_t n;
		char scratch[4096];

		if (*len < RUN_OUT_MAX - 1)
			n = read(fd, buf + *len, RUN_OUT_MAX - 1 - *len);
		else
			n = read(fd, scratch, sizeof(scratch)); /* keep the child unblocked */
		if (n > 0) {
			if (*len < RUN_OUT_MAX - 1)
				*len += (size_t)n;
			continue;
		}
		if (n == 0)
			*eof = true;
		return; /* EAGAIN: nothing more for now */
	}
}

/* Whatever the child wrote is in the pipes once it has exited. */
void run_cmd(const char *file, char *const argv[], char *const envp[],
		    int timeout_ms, struct run *r)
{
	int out[2], err[2], status;
	bool out_eof = false, err_eof = false;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
	cr_assert_eq(pipe2(err, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
	pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		if (strchr(file, '/'))
			execve(file, argv, envp ? envp : environ);
		else
			execvpe(file, argv, envp ? envp : environ);
		dprintf(STDERR_FILENO, "exec %s: %s\n", file, strerror(errno));
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);

	r->status = -1;
	for (long long start = now_ms();;) {
		struct pollfd p[2] = { { out_eof ? -1 : out[0], POLLIN, 0 },
				       { err_eof ? -1 : err[0], POLLIN, 0 } };

		poll(p, 2, 20);
		drain(out[0], r->out, &r->outlen, &out_eof);
		drain(err[0], r->err, &r->errlen, &err_eof);
		if (waitpid(pid, &status, WNOHANG) == pid) {
			drain(out[0], r->out, &r->outlen, &out_eof);
			drain(err[0], r->err, &r->errlen, &err_eof);
			r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			break;
		}
		if (now_ms() - start >= timeout_ms) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
	}
	close(out[0]);
	close(err[0]);
	r->out[r->outlen] = '\0';
	r->err[r->errlen] = '\0';
}

void skip_under_sanitizers_if_children_start_threads(void)
{
#if defined(__SANITIZE_THREAD__)
	cr_skip_test("ThreadSanitizer cannot follow a forked child that starts threads");
#elif defined(__SANITIZE_ADDRESS__)
	cr_skip_test("AddressSanitizer has no fork handlers: a forked child that starts "
		     "threads can wait forever for a lock the parent's threads held");
#endif
}

size_t thp_pmd_size(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");
	unsigned long v = 0;

	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v ? v : 2UL << 20;
}

unsigned long meminfo_field(const char *field)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long v = 0;
	size_t n = strlen(field);

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n)) {
			v = strtoul(line + n, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}
