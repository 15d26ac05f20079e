/* SPDX-License-Identifier: MIT */
/*
 * test_options.c - the hmmfs command line: help and version, every way a
 * bad option or argument is refused (one line on stderr, exit 1, nothing
 * mounted), and every way of mounting: foreground, daemonized with a
 * SOURCE argument, mount -t fuse.hmmfs, an fstab line, single-threaded,
 * debug; and what the options do to statfs and to the root directory.
 *
 * Each case runs the real binary (hmmfs_test_binary()) with fork/exec and
 * captures its stdout and stderr through pipes.
 */
#include "config.h"
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/*
 * What a test leaves behind if an assertion ends it early: suite_fini
 * unmounts the directory, kills the daemon and removes the files.
 */
static char g_dir[64];
static char g_file[64];
static char g_bindir[64];
static pid_t g_daemon;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static long sys_page(void)
{
	return sysconf(_SC_PAGESIZE);
}

/*
 * hmmfs_in_default_path() - make "hmmfs" the binary under test for mount(8).
 *
 * mount.fuse3 starts the daemon with "/bin/sh -c 'hmmfs' SOURCE MNT -o ...",
 * so it is found through PATH.  But util-linux mount runs its helpers with
 * PATH removed from the environment, so the shell searches only its default
 * path, which starts with /usr/local/sbin; setting PATH for mount does not
 * help.  So, in a mount namespace private to this test process, bind a
 * directory holding an "hmmfs" that runs the binary under test over
 * /usr/local/sbin: mount finds it as it would an installed hmmfs, and the
 * system itself is left untouched.
 */
static void hmmfs_in_default_path(void)
{
	char bin[PATH_MAX], script[128];
	FILE *f;

	cr_assert_not_null(realpath(hmmfs_test_binary(), bin), "realpath %s: %s",
			   hmmfs_test_binary(), strerror(errno));
	cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): %s", strerror(errno));
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0,
		     "make / private: %s", strerror(errno));
	strcpy(g_bindir, "/tmp/hmmfs-bin.XXXXXX");
	cr_assert_not_null(mkdtemp(g_bindir), "mkdtemp: %s", strerror(errno));
	snprintf(script, sizeof(script), "%s/hmmfs", g_bindir);
	f = fopen(script, "w");
	cr_assert_not_null(f, "create %s: %s", script, strerror(errno));
	fprintf(f, "#!/bin/sh\nexec '%s' \"$@\"\n", bin);
	fclose(f);
	cr_assert_eq(chmod(script, 0755), 0);
	cr_assert_eq(mount(g_bindir, "/usr/local/sbin", NULL, MS_BIND, NULL), 0,
		     "bind %s over /usr/local/sbin: %s", g_bindir, strerror(errno));
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ---- mounts ----------------------------------------------------------- */

/*
 * mount_entry() - look dir up in /proc/self/mountinfo (without touching the
 * mount itself, which a hung daemon would block).  Fills fstype and source
 * if not NULL.  Return: true if dir is a mount point.
 */
static bool mount_entry(const char *dir, char *fstype, char *source)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096];
	bool found = false;

	cr_assert_not_null(f, "open /proc/self/mountinfo: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char mpoint[1024], type[256], src[1024];
		const char *sep;

		if (sscanf(line, "%*s %*s %*s %*s %1023s", mpoint) != 1 || strcmp(mpoint, dir))
			continue;
		sep = strstr(line, " - ");
		if (!sep || sscanf(sep + 3, "%255s %1023s", type, src) != 2)
			continue;
		found = true; /* the last entry is the one on top */
		if (fstype)
			strcpy(fstype, type);
		if (source)
			strcpy(source, src);
	}
	fclose(f);
	return found;
}

static bool is_mounted(const char *dir)
{
	return mount_entry(dir, NULL, NULL);
}

static void fusermount_u(const char *dir)
{
	char *const argv[] = { "fusermount3", "-u", (char *)dir, NULL };
	struct run *r = malloc(sizeof(*r));

	if (!r)
		return;
	run_cmd("fusermount3", argv, NULL, 10000, r);
	free(r);
}

/*
 * wait_exit() - wait up to timeout_ms for pid (our child) to exit.
 * Return: its exit code, 128 + signal, or -1 if it is still running.
 */
static int wait_exit(pid_t pid, int timeout_ms)
{
	int status;

	for (int t = 0; t < timeout_ms; t += 10) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (w < 0)
			return -2;
		sleep_ms(10);
	}
	return -1;
}

static void new_dir(void)
{
	strcpy(g_dir, "/tmp/hmmfs-opt.XXXXXX");
	cr_assert_not_null(mkdtemp(g_dir), "mkdtemp: %s", strerror(errno));
}

static void suite_fini(void)
{
	if (g_dir[0]) {
		if (is_mounted(g_dir))
			fusermount_u(g_dir);
		if (g_daemon > 0 && wait_exit(g_daemon, 10000) < 0) {
			kill(g_daemon, SIGKILL);
			waitpid(g_daemon, NULL, 0);
		}
		if (is_mounted(g_dir))
			umount2(g_dir, MNT_DETACH);
		rmdir(g_dir);
	}
	if (g_file[0])
		unlink(g_file);
	if (g_bindir[0]) {
		char script[128];

		snprintf(script, sizeof(script), "%s/hmmfs", g_bindir);
		unlink(script);
		rmdir(g_bindir);
	}
}

TestSuite(options, .fini = suite_fini);

/* Start hmmfs in the foreground with these arguments after the binary and
 * wait for the mount on g_dir.  stderr is kept for the log unless quiet. */
static pid_t start_foreground(char *const args[], bool quiet)
{
	char *argv[32];
	int n = 0;
	pid_t pid;

	argv[n++] = "hmmfs";
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		if (quiet)
			dup2(null, STDERR_FILENO);
		execv(hmmfs_test_binary(), argv);
		_exit(127);
	}
	g_daemon = pid;
	for (int t = 0; t < 10000; t += 10) {
		if (is_mounted(g_dir))
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			g_daemon = 0;
			cr_assert_fail("hmmfs exited before mounting %s", g_dir);
		}
		sleep_ms(10);
	}
	cr_assert_fail("hmmfs did not mount %s within 10 s", g_dir);
	return -1;
}

/* Unmount g_dir with fusermount3 -u and check that the daemon exits 0. */
static void stop_and_expect_exit_0(pid_t pid)
{
	int st;

	fusermount_u(g_dir);
	st = wait_exit(pid, 30000);
	cr_assert_neq(st, -1, "hmmfs did not exit within 30 s of fusermount3 -u");
	g_daemon = 0;
	cr_expect_eq(st, 0, "hmmfs exited with status %d at unmount, expected 0", st);
	cr_expect_not(is_mounted(g_dir), "%s still mounted after the daemon exited", g_dir);
}

/* A file in the mount can be written and read back. */
static void expect_mount_serves_files(const char *dir)
{
	char path[128], buf[32] = { 0 };
	int fd;

	snprintf(path, sizeof(path), "%s/probe", dir);
	fd = open(path, O_CREAT | O_RDWR | O_EXCL, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, "hello, hmmfs", 12, 0), 12, "write: %s", strerror(errno));
	cr_assert_eq(pread(fd, buf, sizeof(buf), 0), 12, "read: %s", strerror(errno));
	cr_expect_str_eq(buf, "hello, hmmfs");
	close(fd);
	cr_assert_eq(unlink(path), 0, "unlink: %s", strerror(errno));
}

/*
 * The daemon of a daemonized mount is no child of ours: as a child
 * subreaper, the test process adopts it when its parent exits.  Find it
 * among our children by name ("lt-hmmfs" when run through libtool's wrapper).
 */
static pid_t find_adopted_daemon(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t found = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		char path[300], stat[512], comm[64];
		pid_t pid = (pid_t)atoi(de->d_name), ppid;
		FILE *f;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(stat, sizeof(stat), f)) {
			fclose(f);
			continue;
		}
		fclose(f);
		/* pid (comm) state ppid ...; comm may hold spaces, so use the
		 * last ')' */
		char *open_p = strchr(stat, '('), *close_p = strrchr(stat, ')');
		char state;

		if (!open_p || !close_p || close_p - open_p - 1 >= (long)sizeof(comm))
			continue;
		memcpy(comm, open_p + 1, (size_t)(close_p - open_p - 1));
		comm[close_p - open_p - 1] = '\0';
		if (sscanf(close_p + 2, "%c %d", &state, &ppid) != 2 || ppid != getpid())
			continue;
		if (!strcmp(comm, "hmmfs") || !strcmp(comm, "lt-hmmfs"))
			found = pid;
	}
	closedir(d);
	return found;
}

/* ---- help and version ------------------------------------------------- */

static void expect_help(const char *flag)
{
	struct run *r = malloc(sizeof(*r));
	char *const argv[] = { "hmmfs", (char *)flag, g_dir, NULL };

	cr_assert_not_null(r);
	new_dir();
	run_cmd(hmmfs_test_binary(), argv, NULL, 10000, r);
	cr_expect_eq(r->status, 0, "hmmfs %s exited with %d; stderr: %s", flag, r->status, r->err);
	cr_expect_not_null(strstr(r->out, "Usage:"), "no 'Usage:' in: %s", r->out);
	cr_expect_not_null(strstr(r->out, "host_mem="), "help does not mention host_mem");
	cr_expect_not_null(strstr(r->out, "page_size="), "help does not mention page_size");
	cr_expect_not_null(strstr(r->out, "nr_inodes="), "help does not mention nr_inodes");
	cr_expect_eq(r->errlen, 0, "help wrote to stderr: %s", r->err);
	cr_expect_not(is_mounted(g_dir), "hmmfs %s mounted %s", flag, g_dir);
	free(r);
}

Test(options, help_long_option_prints_usage_on_stdout_and_mounts_nothing)
{
	expect_help("--help");
}

Test(options, help_short_option_prints_usage_on_stdout_and_mounts_nothing)
{
	expect_help("-h");
}

static void expect_version(const char *flag)
{
	struct run *r = malloc(sizeof(*r));
	char *const argv[] = { "hmmfs", (char *)flag, NULL };
	char first[256] = "", want[64];

	cr_assert_not_null(r);
	run_cmd(hmmfs_test_binary(), argv, NULL, 10000, r);
	cr_expect_eq(r->status, 0, "hmmfs %s exited with %d; stderr: %s", flag, r->status, r->err);
	snprintf(want, sizeof(want), "hmmfs %s", PACKAGE_VERSION);
	cr_expect_not_null(strstr(r->out, want), "no '%s' in the output: %s", want, r->out);
	/* The first line, as `hmmfs --version | head -n 1` shows, even when
	 * stdout is a pipe (libfuse's own lines come after it). */
	sscanf(r->out, "%255[^\n]", first);
	cr_expect_not_null(strstr(first, want), "first line '%s' is not hmmfs's own version line",
			   first);
	cr_expect_eq(r->errlen, 0, "hmmfs %s wrote to stderr: %s", flag, r->err);
	free(r);
}

Test(options, version_long_option_prints_name_and_version)
{
	expect_version("--version");
}

Test(options, version_short_option_prints_name_and_version)
{
	expect_version("-V");
}

/* ---- refusals ----------------------------------------------------------- */

/*
 * expect_refused() - run hmmfs -f with args and g_dir where the mount point
 * goes, and check the refusal: exit 1, nothing on stdout, exactly one line
 * on stderr starting with prefix (or, if fuse_ok, with "fuse: " from
 * libfuse), and nothing mounted on g_dir.
 */
static void expect_refused(char *const argv[], const char *prefix, bool fuse_ok)
{
	struct run *r = malloc(sizeof(*r));
	char what[512] = "";

	cr_assert_not_null(r);
	for (char *const *a = argv + 1; *a; a++)
		snprintf(what + strlen(what), sizeof(what) - strlen(what), " %s", *a);
	run_cmd(hmmfs_test_binary(), argv, NULL, 10000, r);
	if (r->status == -1) {
		fusermount_u(g_dir);
		cr_assert_fail("hmmfs%s was still running after 10 s (it accepted the arguments)",
			       what);
	}
	cr_expect_eq(r->status, 1, "hmmfs%s exited with %d, expected 1; stderr: %s", what,
		     r->status, r->err);
	cr_expect_eq(r->outlen, 0, "hmmfs%s wrote to stdout: %s", what, r->out);
	cr_expect_eq(count_lines(r->err), 1, "hmmfs%s: expected one line on stderr, got: %s",
		     what, r->err);
	cr_expect(r->errlen > 0 && r->err[r->errlen - 1] == '\n',
		  "hmmfs%s: stderr does not end with a newline: %s", what, r->err);
	cr_expect(!strncmp(r->err, prefix, strlen(prefix)) ||
		  (fuse_ok && !strncmp(r->err, "fuse: ", 6)),
		  "hmmfs%s: stderr should start with '%s'%s, got: %s", what, prefix,
		  fuse_ok ? " or 'fuse: '" : "", r->err);
	cr_expect_not(is_mounted(g_dir), "hmmfs%s left %s mounted", what, g_dir);
	free(r);
}

struct bad_opt {
	char opt[64];
	bool fuse_ok; /* an option hmmfs does not know: libfuse may be the one to refuse */
};

ParameterizedTestParameters(options, bad_option_value_is_refused_with_one_line_and_nothing_mounted)
{
	static struct bad_opt cases[] = {
		{ "host_mem=abc", false },
		{ "host_mem=0", false },
		{ "host_mem=1Q", false },
		{ "host_mem=16MB", false },
		{ "host_mem=", false },
		{ "host_mem=-1M", false },
		{ "host_mem=99999999999999999999T", false },  /* more than 64 bits of digits */
		{ "host_mem=16777216T", false },              /* 2^64 once scaled */
		{ "host_mem=1000", false },                   /* less than one page */
		{ "host_mem=16M,page_size=64M", false },      /* less than one page */
		{ "page_size=3000", false },
		{ "page_size=1000", false },
		{ "page_size=2048", false },                  /* a power of two below the system page */
		{ "page_size=12K", false },
		{ "page_size=0", false },
		{ "page_size=2G", false },
		{ "page_size=x", false },
		{ "nr_inodes=0", false },
		{ "nr_inodes=x", false },
		{ "nr_inodes=-1", false },
		{ "mode=8", false },
		{ "mode=17777", false },
		{ "uid=x", false },
		{ "gid=-1", false },
		{ "host_node=4095", false },                  /* no such NUMA node */
		{ "host_node=x", false },
		{ "devices=65", false },
		{ "devices=-1", false },
		{ "devices=two", false },
		{ "device_mem=1G", false },                   /* device options without devices */
		{ "device_type=coherent", false },
		{ "device_node=0", false },
		{ "dma_engines=2", false },
		{ "dma_bw=1G", false },
		{ "dma_latency=5", false },
		{ "evict=none", false },
		{ "devices=0,evict=lru", false },
		{ "devices=1,device_mem=1000", false },       /* less than one page */
		{ "devices=1,device_mem=16777216T", false },  /* overflows 64 bits */
		{ "devices=1,device_mem=x", false },
		{ "devices=1,device_type=shared", false },
		{ "devices=2,device_type=private:coherent:private", false },
		{ "devices=3,device_type=private:coherent", false },
		{ "devices=2,device_type=private:", false },
		{ "devices=2,device_type=:private", false },
		{ "devices=1,device_node=4095", false },
		{ "devices=2,device_node=0:4095", false },
		{ "devices=1,dma_engines=0", false },
		{ "devices=1,dma_engines=65", false },
		{ "devices=1,dma_bw=0", false },
		{ "devices=1,dma_bw=fast", false },
		{ "devices=1,dma_latency=-1", false },
		{ "devices=1,dma_latency=99999999999", false },
		{ "devices=1,evict=fifo", false },
		{ "attach=all", false },                      /* needs devices */
		{ "devices=1,attach=everyone", false },
		{ "devices=1,attach=", false },
		{ "no_such_option", true },
		{ "no_such_option=1", true },
	};

	return cr_make_param_array(struct bad_opt, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_opt *c, options,
		  bad_option_value_is_refused_with_one_line_and_nothing_mounted)
{
	char opt[64];
	char *argv[] = { "hmmfs", "-f", "-o", opt, g_dir, NULL };

	snprintf(opt, sizeof(opt), "%s", c->opt);
	new_dir();
	expect_refused(argv, "hmmfs: ", c->fuse_ok);
}

Test(options, unknown_command_line_flag_is_refused)
{
	char *argv[] = { "hmmfs", "-f", "--no-such-flag", g_dir, NULL };

	new_dir();
	expect_refused(argv, "hmmfs: ", true);
}

Test(options, missing_mount_point_is_a_usage_error)
{
	char *argv[] = { "hmmfs", "-f", "-o", "host_mem=16M", NULL };

	new_dir(); /* only so that expect_refused has a directory to look at */
	expect_refused(argv, "hmmfs: ", false);
}

Test(options, mount_point_that_does_not_exist_is_refused)
{
	char missing[128];
	char *argv[] = { "hmmfs", "-f", "-o", "host_mem=16M", missing, NULL };

	new_dir();
	snprintf(missing, sizeof(missing), "%s/does-not-exist", g_dir);
	expect_refused(argv, "hmmfs: ", true);
	cr_expect_neq(access(missing, F_OK), 0, "hmmfs created the missing mount point");
}

Test(options, too_many_arguments_are_refused)
{
	/* Three words where at most SOURCE MOUNTPOINT fit: even though each
	 * could be a mount point, none may be mounted. */
	char *argv[] = { "hmmfs", "-f", "hmmfs", g_dir, g_dir, NULL };

	new_dir();
	expect_refused(argv, "hmmfs: ", false);
}

/* ---- mounting ----------------------------------------------------------- */

static void expect_statfs(const char *dir, uint64_t host_mem, uint64_t page_size,
			  uint64_t nr_inodes)
{
	struct statvfs sv;

	cr_assert_eq(statvfs(dir, &sv), 0, "statvfs %s: %s", dir, strerror(errno));
	cr_expect_eq(sv.f_bsize, page_size, "f_bsize %lu, expected %llu", sv.f_bsize,
		     (unsigned long long)page_size);
	cr_expect_eq(sv.f_frsize, page_size, "f_frsize %lu, expected %llu", sv.f_frsize,
		     (unsigned long long)page_size);
	cr_expect_eq(sv.f_blocks, host_mem / page_size, "f_blocks %llu, expected %llu",
		     (unsigned long long)sv.f_blocks, (unsigned long long)(host_mem / page_size));
	cr_expect_eq(sv.f_bfree, sv.f_blocks, "an empty mount has f_bfree %llu of %llu",
		     (unsigned long long)sv.f_bfree, (unsigned long long)sv.f_blocks);
	cr_expect_eq(sv.f_bavail, sv.f_bfree, "f_bavail %llu != f_bfree %llu",
		     (unsigned long long)sv.f_bavail, (unsigned long long)sv.f_bfree);
	cr_expect_eq(sv.f_files, nr_inodes, "f_files %llu, expected %llu",
		     (unsigned long long)sv.f_files, (unsigned long long)nr_inodes);
	cr_expect_eq(sv.f_namemax, 255, "f_namemax %lu", sv.f_namemax);
}

struct size_case {
	char opts[192];
	uint64_t host_mem;
	uint64_t page_size; /* 0: the system page */
	uint64_t nr_inodes; /* 0: the default, max(1024, host_mem / 4096) */
};

ParameterizedTestParameters(options, size_options_show_in_statfs_and_st_blksize)
{
	static struct size_case cases[] = {
		{ "host_mem=64M", 64ULL << 20, 0, 0 },
		{ "host_mem=16384K", 16ULL << 20, 0, 0 },
		{ "host_mem=16777216", 16ULL << 20, 0, 0 },
		{ "host_mem=1G", 1ULL << 30, 0, 0 },
		{ "host_mem=1T", 1ULL << 40, 0, 0 },
		{ "host_mem=1M", 1ULL << 20, 0, 0 },       /* default inodes: the 1024 floor */
		{ "host_mem=64M,page_size=64K", 64ULL << 20, 64 << 10, 0 },
		{ "host_mem=64M,page_size=2M", 64ULL << 20, 2 << 20, 0 },
		{ "host_mem=16M,nr_inodes=100", 16ULL << 20, 0, 100 },
		{ "host_mem=16M,nr_inodes=1", 16ULL << 20, 0, 1 },
		/* Devices do not change what statfs reports: host RAM. */
		{ "host_mem=64M,devices=1", 64ULL << 20, 0, 0 },
		{ "host_mem=64M,host_node=0,devices=2,device_mem=32M,device_type=private:coherent,"
		  "device_node=0,dma_engines=2,dma_bw=1G,dma_latency=10,evict=none,attach=owner",
		  64ULL << 20, 0, 0 },
		{ "host_mem=64M,page_size=64K,devices=4,device_type=coherent,device_node=0:0:0:0,"
		  "evict=lru,attach=all", 64ULL << 20, 64 << 10, 0 },
	};

	return cr_make_param_array(struct size_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct size_case *c, options, size_options_show_in_statfs_and_st_blksize)
{
	uint64_t page_size = c->page_size ? c->page_size : (uint64_t)sys_page();
	uint64_t nr_inodes = c->nr_inodes ? c->nr_inodes
					  : (c->host_mem / 4096 > 1024 ? c->host_mem / 4096 : 1024);
	char opts[192];
	char *args[] = { "-f", "-o", opts, g_dir, NULL };
	struct stat st;
	pid_t pid;

	snprintf(opts, sizeof(opts), "%s", c->opts);
	new_dir();
	pid = start_foreground(args, false);
	expect_statfs(g_dir, c->host_mem, page_size, nr_inodes);
	cr_expect_eq(stat(g_dir, &st), 0);
	cr_expect_eq((uint64_t)st.st_blksize, page_size, "root st_blksize %ld, expected %llu",
		     (long)st.st_blksize, (unsigned long long)page_size);
	stop_and_expect_exit_0(pid);
}

Test(options, defaults_are_half_of_ram_the_system_page_and_a_1777_root)
{
	uint64_t pg = (uint64_t)sys_page();
	uint64_t host_mem = (uint64_t)sysconf(_SC_PHYS_PAGES) * pg / 2;
	char *args[] = { "-f", g_dir, NULL };
	struct statvfs sv;
	struct stat st;
	pid_t pid;

	new_dir();
	pid = start_foreground(args, false);
	cr_assert_eq(statvfs(g_dir, &sv), 0, "statvfs: %s", strerror(errno));
	cr_expect_eq(sv.f_bsize, pg);
	/* Allow one page of rounding either way in "half of RAM". */
	cr_expect(sv.f_blocks + 1 >= host_mem / pg && sv.f_blocks <= host_mem / pg + 1,
		  "f_blocks %llu, expected about %llu (half of RAM)",
		  (unsigned long long)sv.f_blocks, (unsigned long long)(host_mem / pg));
	cr_expect_eq(sv.f_files, (uint64_t)sv.f_blocks * pg / 4096 > 1024
				 ? (uint64_t)sv.f_blocks * pg / 4096 : 1024,
		     "f_files %llu, expected host_mem / 4096", (unsigned long long)sv.f_files);
	cr_assert_eq(stat(g_dir, &st), 0);
	cr_expect_eq(st.st_mode, S_IFDIR | 01777, "root mode %o, expected 41777 (as tmpfs)",
		     st.st_mode);
	cr_expect_eq(st.st_uid, getuid());
	cr_expect_eq(st.st_gid, getgid());
	stop_and_expect_exit_0(pid);
}

Test(options, mode_uid_and_gid_set_the_root_directory)
{
	char *args[] = { "-f", "-o", "host_mem=16M,mode=0750,uid=65534,gid=65533", g_dir, NULL };
	struct stat st;
	pid_t pid;

	new_dir();
	pid = start_foreground(args, false);
	cr_assert_eq(stat(g_dir, &st), 0, "stat: %s", strerror(errno));
	cr_expect_eq(st.st_mode, S_IFDIR | 0750, "root mode %o, expected 40750", st.st_mode);
	cr_expect_eq(st.st_uid, 65534);
	cr_expect_eq(st.st_gid, 65533);
	stop_and_expect_exit_0(pid);
}

Test(options, foreground_mount_is_fuse_hmmfs_serves_files_and_exits_0)
{
	char *args[] = { "-f", "-o", "host_mem=64M", g_dir, NULL };
	char type[256];
	pid_t pid;

	new_dir();
	pid = start_foreground(args, false);
	cr_assert(mount_entry(g_dir, type, NULL));
	cr_expect_str_eq(type, "fuse.hmmfs", "mount type %s, expected fuse.hmmfs", type);
	expect_mount_serves_files(g_dir);
	cr_expect_eq(waitpid(pid, NULL, WNOHANG), 0, "-f: the daemon is not our child any more");
	stop_and_expect_exit_0(pid);
}

Test(options, fsname_and_subtype_options_reach_the_mount_table)
{
	char *args[] = { "-f", "-o", "host_mem=16M,fsname=scratch,subtype=hmmtest", g_dir, NULL };
	char type[256], source[1024];
	pid_t pid;

	new_dir();
	pid = start_foreground(args, false);
	cr_assert(mount_entry(g_dir, type, source));
	cr_expect_str_eq(type, "fuse.hmmtest");
	cr_expect_str_eq(source, "scratch");
	stop_and_expect_exit_0(pid);
}

Test(options, single_threaded_mount_serves_files_and_exits_0)
{
	char *args[] = { "-f", "-s", "-o", "host_mem=16M", g_dir, NULL };
	pid_t pid;

	new_dir();
	pid = start_foreground(args, false);
	expect_mount_serves_files(g_dir);
	stop_and_expect_exit_0(pid);
}

Test(options, debug_option_stays_in_the_foreground)
{
	char *args[] = { "-d", "-o", "host_mem=16M", g_dir, NULL };
	pid_t pid;

	new_dir();
	pid = start_foreground(args, true);
	expect_mount_serves_files(g_dir);
	cr_expect_eq(waitpid(pid, NULL, WNOHANG), 0, "-d did not keep hmmfs in the foreground");
	stop_and_expect_exit_0(pid);
}

Test(options, ro_option_gives_a_read_only_mount)
{
	char *args[] = { "-f", "-o", "host_mem=16M,ro", g_dir, NULL };
	char path[128];
	pid_t pid;

	new_dir();
	pid = start_foreground(args, false);
	snprintf(path, sizeof(path), "%s/f", g_dir);
	errno = 0;
	cr_expect_eq(open(path, O_CREAT | O_WRONLY, 0644), -1);
	cr_expect_eq(errno, EROFS, "create on a ro mount: %s, expected EROFS", strerror(errno));
	errno = 0;
	cr_expect_eq(mkdir(path, 0755), -1);
	cr_expect_eq(errno, EROFS, "mkdir on a ro mount: %s, expected EROFS", strerror(errno));
	stop_and_expect_exit_0(pid);
}

/*
 * After a command that daemonizes hmmfs has returned: the mount is live,
 * the daemon (adopted by us) serves it, and after unmount_argv it exits 0.
 */
static void expect_daemonized_mount(char *const unmount_argv[], uint64_t host_mem)
{
	struct run *r = malloc(sizeof(*r));
	char type[256];
	pid_t daemon;
	int st;

	cr_assert_not_null(r);
	cr_assert(mount_entry(g_dir, type, NULL), "%s is not mounted once the command returned",
		  g_dir);
	cr_expect_str_eq(type, "fuse.hmmfs");
	daemon = find_adopted_daemon();
	cr_assert_gt(daemon, 0, "no hmmfs daemon found among the test's adopted children");
	g_daemon = daemon;
	expect_statfs(g_dir, host_mem, (uint64_t)sys_page(),
		      host_mem / 4096 > 1024 ? host_mem / 4096 : 1024);
	expect_mount_serves_files(g_dir);

	run_cmd(unmount_argv[0], unmount_argv, NULL, 10000, r);
	cr_expect_eq(r->status, 0, "%s exited with %d: %s", unmount_argv[0], r->status, r->err);
	st = wait_exit(daemon, 30000);
	cr_assert_neq(st, -1, "the daemon did not exit within 30 s of %s", unmount_argv[0]);
	g_daemon = 0;
	cr_expect_eq(st, 0, "the daemon exited with %d after %s, expected 0", st,
		     unmount_argv[0]);
	cr_expect_not(is_mounted(g_dir), "%s still mounted", g_dir);
	free(r);
}

Test(options, daemonized_mount_with_source_returns_once_live_and_exits_0_after_fusermount)
{
	struct run *r = malloc(sizeof(*r));
	char *argv[] = { "hmmfs", "hmmfs", g_dir, "-o", "host_mem=16M", NULL };
	char *umount_argv[] = { "fusermount3", "-u", g_dir, NULL };

	cr_assert_not_null(r);
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	new_dir();
	run_cmd(hmmfs_test_binary(), argv, NULL, 10000, r);
	cr_assert_eq(r->status, 0, "hmmfs hmmfs MNT exited with %d: %s", r->status, r->err);
	cr_expect_eq(r->errlen, 0, "hmmfs wrote to stderr: %s", r->err);
	expect_daemonized_mount(umount_argv, 16ULL << 20);
	free(r);
}

Test(options, mount_t_fuse_hmmfs_mounts_and_umount_unmounts)
{
	struct run *r = malloc(sizeof(*r));
	char *argv[] = { "mount", "-t", "fuse.hmmfs", "hmmfs", g_dir, "-o", "host_mem=16M", NULL };
	char *umount_argv[] = { "umount", g_dir, NULL };

	cr_assert_not_null(r);
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	hmmfs_in_default_path();
	new_dir();
	run_cmd("mount", argv, NULL, 15000, r);
	cr_assert_eq(r->status, 0, "mount -t fuse.hmmfs exited with %d: %s", r->status, r->err);
	expect_daemonized_mount(umount_argv, 16ULL << 20);
	free(r);
}

Test(options, fstab_line_mounts_with_mount_T)
{
	struct run *r = malloc(sizeof(*r));
	char *argv[] = { "mount", "-T", g_file, g_dir, NULL };
	char *umount_argv[] = { "fusermount3", "-u", g_dir, NULL };
	FILE *f;
	int fd;

	cr_assert_not_null(r);
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	hmmfs_in_default_path();
	new_dir();
	strcpy(g_file, "/tmp/hmmfs-fstab.XXXXXX");
	fd = mkstemp(g_file);
	cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
	f = fdopen(fd, "w");
	cr_assert_not_null(f);
	fprintf(f, "# test fstab\nhmmfs %s fuse.hmmfs host_mem=16M 0 0\n", g_dir);
	fclose(f);
	run_cmd("mount", argv, NULL, 15000, r);
	cr_assert_eq(r->status, 0, "mount -T %s %s exited with %d: %s", g_file, g_dir, r->status,
		     r->err);
	expect_daemonized_mount(umount_argv, 16ULL << 20);
	free(r);
}
