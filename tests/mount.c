/* SPDX-License-Identifier: MIT */
/* Mount fixtures for the Criterion tests: a real hmmfs through /dev/fuse. */
#include "config.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct hmmfs_test_mount mnt;

const char *hmmfs_test_binary(void)
{
	const char *bin = getenv("HMMFS_BIN");
	return bin && *bin ? bin : HMMFS_BIN;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Return: 1 with *conn set to the FUSE connection if dir is a mount point. */
static int is_mounted(const char *dir, unsigned *conn)
{
	struct stat a, b;
	char parent[128];

	snprintf(parent, sizeof(parent), "%s/..", dir);
	if (stat(dir, &a) < 0 || stat(parent, &b) < 0)
		return 0;
	*conn = minor(a.st_dev);
	return a.st_dev != b.st_dev;
}

/* Abort FUSE connection conn, mounting fusectl first if needed. */
static void abort_connection(unsigned conn)
{
	char path[96];
	int fd;

	mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL);
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", conn);
	fd = open(path, O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "1", 1) != 1)
			perror(path);
		close(fd);
	}
}

int hmmfs_test_mount(struct hmmfs_test_mount *m, const char *opts)
{
	char optbuf[1024];
	pid_t pid;

	strcpy(m->dir, "/tmp/hmmfs-test.XXXXXX");
	if (!mkdtemp(m->dir)) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(optbuf, sizeof(optbuf), "allow_other%s%s", opts && *opts ? "," : "",
		 opts ? opts : "");
	pid = fork();
	if (pid < 0) {
		perror("fork");
		rmdir(m->dir);
		return -1;
	}
	if (pid == 0) {
		/* If the test process dies, take the daemon (and so the mount) with it. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(hmmfs_test_binary(), "hmmfs", "-f", "-o", optbuf, m->dir, (char *)NULL);
		perror("exec hmmfs");
		_exit(127);
	}
	m->pid = pid;
	for (int i = 0; i < 1000; i++) {
		int status;

		if (is_mounted(m->dir, &m->conn))
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fprintf(stderr, "hmmfs exited before mounting (status %d)\n", status);
			m->pid = 0;
			rmdir(m->dir);
			return -1;
		}
		sleep_ms(10);
	}
	fprintf(stderr, "hmmfs did not mount %s within 10 s\n", m->dir);
	hmmfs_test_umount(m);
	return -1;
}

static int run_fusermount(const char *dir, bool lazy)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, STDERR_FILENO);
		execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", dir, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int hmmfs_test_umount(struct hmmfs_test_mount *m)
{
	int status = 0, result = -1;

	if (m->pid <= 0)
		return -1;
	run_fusermount(m->dir, false);
	/* 30 s: a large file's pages are freed at unmount, slowly under ASan. */
	for (int i = 0; i < 3000; i++) {
		if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
			result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			break;
		}
		if (i % 10 == 9 && i < 100)
			run_fusermount(m->dir, false); /* busy: a child may still hold a file */
		if (i == 100) {
			/* Still busy after a second: a failed test left files open.
			 * Detach the mount and stop the daemon rather than wait. */
			fprintf(stderr, "%s is busy; detaching it\n", m->dir);
			run_fusermount(m->dir, true);
			kill(m->pid, SIGTERM);
		}
		sleep_ms(10);
	}
	if (result < 0) {
		fprintf(stderr, "hmmfs on %s did not exit; killing it\n", m->dir);
		kill(m->pid, SIGKILL);
		for (int i = 0; i <= 500 && waitpid(m->pid, &status, WNOHANG) != m->pid; i++) {
			if (i == 500) {
				/* Stuck in the kernel, waiting on its own mount. */
				fprintf(stderr, "hmmfs on %s survives SIGKILL; aborting "
					"FUSE connection %u\n", m->dir, m->conn);
				abort_connection(m->conn);
				waitpid(m->pid, &status, 0);
			}
			sleep_ms(10);
		}
		umount2(m->dir, MNT_DETACH);
	}
	m->pid = 0;
	rmdir(m->dir);
	return result;
}

void mnt_setup_opts(const char *opts)
{
	if (hmmfs_test_mount(&mnt, opts) < 0)
		cr_assert_fail("could not mount hmmfs (options: %s)", opts ? opts : "none");
}

void mnt_setup(void)
{
	mnt_setup_opts(NULL);
}

void mnt_teardown(void)
{
	int status = hmmfs_test_umount(&mnt);
	cr_expect_eq(status, 0, "hmmfs exited with status %d at unmount", status);
}

const char *mp(const char *rel)
{
	static __thread char buf[4096 + 128];

	snprintf(buf, sizeof(buf), "%s/%s", mnt.dir, rel);
	return buf;
}

static unsigned char pattern_byte(unsigned long long off, unsigned seed)
{
	unsigned long long x = (off >> 3) * 0x9E3779B97F4A7C15ULL + seed * 0xD1B54A32D192ED03ULL;
	x ^= x >> 29;
	return (unsigned char)((x >> ((off & 7) * 8)) ^ (off & 0xff) ^ 0x5a);
}

void pattern_fill(unsigned char *buf, size_t len, unsigned long long off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern_byte(off + i, seed);
}

long long pattern_check(const unsigned char *buf, size_t len, unsigned long long off,
			unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != pattern_byte(off + i, seed))
			return (long long)i;
	return -1;
}
