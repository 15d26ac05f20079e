/* SPDX-License-Identifier: MIT */
/*
 * test_session.c - attaching to the devices of a real hmmfs mount
 * (hmmfs/session.c, libhmm/client.c): who may attach, tokens that only
 * their own process can redeem and only once, a file's device memory
 * shared with the daemon through the granted descriptor, read-only for a
 * read-only open, and a client that dies while holding it.
 *
 * The tests run as root (they mount); "another user" is a child that drops
 * to nobody (65534) before it tries.
 */
#define _GNU_SOURCE
#include "hmm-internal.h"
#include "helpers.h"
#include "mount.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define NPAGES 16

static void setup(void)
{
	mnt_setup_opts("host_mem=64M,devices=2,device_mem=8M");
}

static void setup_attach_all(void)
{
	mnt_setup_opts("host_mem=64M,devices=1,device_mem=8M,attach=all");
}

TestSuite(session, .init = setup, .fini = mnt_teardown, .timeout = 60);
TestSuite(session_all, .init = setup_attach_all, .fini = mnt_teardown, .timeout = 60);

static void migrate(int fd, int dest)
{
	struct hmm_migrate m = { .offset = 0, .length = 0, .dest = dest };

	cr_assert_eq(ioctl(fd, HMM_IOC_MIGRATE, &m), 0, "migrate to %d: %m", dest);
}

/* A file of NPAGES pages of pattern seed 7, its pages moved to dest. */
static int file_on(const char *rel, int dest, int flags)
{
	int fd = create_file(rel);

	write_pattern(fd, 0, NPAGES * PAGE, 7);
	close(fd);
	fd = open(mp(rel), flags | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open: %m");
	if (dest != HMM_LOC_HOST)
		migrate(fd, dest);
	return fd;
}

/* ioctl(fd, request, arg) must fail with err. */
static void expect_ioctl_fails(int fd, unsigned long request, void *arg, int err)
{
	cr_assert_eq(ioctl(fd, request, arg), -1, "ioctl %#lx succeeded", request);
	cr_assert_eq(errno, err, "ioctl %#lx: %s, expected %s", request, strerrorname_np(errno),
		     strerrorname_np(err));
}

static void device_pages(int fd, unsigned index, uint64_t offset, uint32_t count,
			 struct hmm_device_pages *out)
{
	memset(out, 0, sizeof(*out));
	out->offset = offset;
	out->index = index;
	out->count = count;
	cr_assert_eq(ioctl(fd, HMM_IOC_DEVICE_PAGES, out), 0, "HMM_IOC_DEVICE_PAGES: %m");
}

/* For as_nobody(): attach to device 0 of the mount at path. */
static int try_attach(const char *path)
{
	struct hmm__client *c;
	int err = hmm__client_attach(path, 0, NULL, NULL, &c);

	if (err) {
		errno = -err;
		return -1;
	}
	hmm__client_detach(c);
	return 0;
}

Test(session, the_owner_attaches_and_bad_requests_fail_cleanly)
{
	struct hmm__client *c = NULL;

	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	cr_assert_eq(hmm__client_page_size(c), PAGE);
	hmm__client_detach(c);
	cr_assert_eq(hmm__client_attach(mnt.dir, 1, NULL, NULL, &c), 0, "the second device too");
	hmm__client_detach(c);
	cr_assert_eq(hmm__client_attach(mnt.dir, 2, NULL, NULL, &c), -ENODEV);
	cr_assert_eq(hmm__client_attach("/proc", 0, NULL, NULL, &c), -ENOTTY, "not an hmmfs mount");
	cr_assert_eq(hmm__client_attach(mp("no/such"), 0, NULL, NULL, &c), -ENOENT);
	cr_assert_eq(hmm__client_attach(NULL, 0, NULL, NULL, &c), -EINVAL);
}

Test(session, the_attach_ioctl_checks_its_arguments)
{
	int fd = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	struct hmm_attach a = { .index = 0, .flags = 1 };

	expect_ioctl_fails(fd, HMM_IOC_ATTACH, &a, EINVAL);
	a.flags = 0;
	a.index = 99;
	expect_ioctl_fails(fd, HMM_IOC_ATTACH, &a, ENODEV);
	close(fd);
}

Test(session, another_user_is_refused_unless_the_mount_says_attach_all)
{
	assert_nobody_gets(try_attach, mnt.dir, EACCES);
}

/* For as_nobody(): observe the mount at path and get a grant of a file. */
static int try_observe(const char *path)
{
	struct hmm__client *c;
	char file[PATH_MAX];
	int fd, err;

	err = hmm__client_attach(path, HMM_ATTACH_OBSERVE, NULL, NULL, &c);
	if (!err) {
		snprintf(file, sizeof(file), "%s/pub", path);
		fd = open(file, O_RDONLY);
		err = fd < 0 ? -errno : hmm__client_grant(c, fd, NULL, NULL, NULL);
		if (fd >= 0)
			close(fd);
		hmm__client_detach(c);
	}
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}

Test(session, another_user_may_observe_the_files_it_can_open)
{
	int fd = file_on("pub", HMM_LOC_HOST, O_RDWR);

	skip_under_sanitizers_if_children_start_threads();
	cr_assert_eq(fchmod(fd, 0644), 0);
	assert_nobody_gets(try_observe, mnt.dir, 0);
	close(fd);
}

/* Connect to the daemon's socket name and say hello with token; the
 * connection stays open.  Return: the socket, or -1 with *status the
 * welcome's status (or -ECONNRESET). */
static int hello(const char *name, const uint64_t *token, int *status)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct hmm__msg msg = { .type = HMM__MSG_HELLO }, reply;
	int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), fd = -1;

	memcpy(addr.sun_path + 1, name, strlen(name));
	memcpy(msg.token, token, sizeof(msg.token));
	*status = -ECONNRESET;
	if (connect(sock, (struct sockaddr *)&addr,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name))) == 0 &&
	    hmm__msg_send(sock, &msg, -1) == 0 && hmm__msg_recv(sock, &reply, &fd) == 0)
		*status = reply.status;
	if (fd >= 0)
		close(fd);
	if (*status) {
		close(sock);
		return -1;
	}
	return sock;
}

#define PER_USER 64

/* For as_nobody(): another user gets PER_USER observing sessions and no
 * more, then PER_USER tokens and no more.  Fails with EPROTO otherwise. */
static int take_every_session(const char *path)
{
	struct hmm_attach a = { .index = HMM_ATTACH_OBSERVE };
	int fd = open(path, O_RDONLY | O_DIRECTORY), socks[PER_USER], st = 0, ok = 1;

	if (fd < 0)
		return -1;
	for (int i = 0; i < PER_USER && ok; i++) {
		ok = ioctl(fd, HMM_IOC_ATTACH, &a) == 0 &&
		     (socks[i] = hello(a.socket, a.token, &st)) >= 0;
		if (!ok) {
			errno = EPROTO;
			return -1;
		}
	}
	/* One more session: refused at its hello. */
	if (ioctl(fd, HMM_IOC_ATTACH, &a) || hello(a.socket, a.token, &st) >= 0 ||
	    st != -EAGAIN)
		ok = 0;
	/* Tokens: PER_USER pending, then EAGAIN. */
	for (int i = 0; i < PER_USER && ok; i++)
		ok = ioctl(fd, HMM_IOC_ATTACH, &a) == 0;
	if (ok && (ioctl(fd, HMM_IOC_ATTACH, &a) == 0 || errno != EAGAIN))
		ok = 0;
	for (int i = 0; i < PER_USER; i++)
		close(socks[i]);
	close(fd);
	if (!ok) {
		errno = EPROTO;
		return -1;
	}
	return 0;
}

Test(session, another_user_holds_at_most_its_share_of_sessions_and_tokens)
{
	struct hmm__client *c;

	assert_nobody_gets(take_every_session, mnt.dir, 0);
	/* The owner is not held to it. */
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	hmm__client_detach(c);
}

Test(session, an_observer_cannot_reserve_device_memory)
{
	int fd = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	struct hmm_attach a = { .index = HMM_ATTACH_OBSERVE };
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct hmm__msg msg = { .type = HMM__MSG_HELLO }, reply;
	struct hmm_device_info before = { .index = 0 }, after = { .index = 0 };
	int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), rfd;

	cr_assert_eq(ioctl(fd, HMM_IOC_ATTACH, &a), 0, "%m");
	cr_assert_eq(ioctl(fd, HMM_IOC_DEVICE_INFO, &before), 0);
	memcpy(addr.sun_path + 1, a.socket, strlen(a.socket));
	cr_assert_eq(connect(sock, (struct sockaddr *)&addr,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
					 strlen(a.socket))), 0);
	memcpy(msg.token, a.token, sizeof(msg.token));
	cr_assert_eq(hmm__msg_send(sock, &msg, -1), 0);
	cr_assert_eq(hmm__msg_recv(sock, &reply, &rfd), 0);
	cr_assert_eq(reply.status, 0);
	/* Device memory for a session that attached no device: refused. */
	msg = (struct hmm__msg){ .type = HMM__MSG_RESERVE, .seq = 1, .arg = { 0, 1 << 20 } };
	cr_assert_eq(hmm__msg_send(sock, &msg, -1), 0);
	cr_assert_eq(hmm__msg_recv(sock, &reply, &rfd), 0);
	cr_assert_eq(reply.type, HMM__MSG_RESERVED);
	cr_assert_eq(reply.status, -EINVAL);
	cr_assert_eq(ioctl(fd, HMM_IOC_DEVICE_INFO, &after), 0);
	cr_assert_eq(after.used, before.used, "nothing was reserved");
	close(sock);
	close(fd);
}

Test(session_all, with_attach_all_another_user_attaches)
{
	skip_under_sanitizers_if_children_start_threads();
	assert_nobody_gets(try_attach, mnt.dir, 0);
}

/* Present token words on a fresh connection; return WELCOME's status, or
 * -ECONNRESET if the daemon hung up without one. */
static int present(const char *name, const uint64_t *token)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct hmm__msg hello = { .type = HMM__MSG_HELLO }, reply;
	int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ssize_t n;

	memcpy(addr.sun_path + 1, name, strlen(name));
	if (connect(sock, (struct sockaddr *)&addr,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name))) < 0) {
		close(sock);
		return -errno;
	}
	memcpy(hello.token, token, sizeof(hello.token));
	n = send(sock, &hello, sizeof(hello), MSG_NOSIGNAL);
	if (n == sizeof(hello))
		n = recv(sock, &reply, sizeof(reply), 0);
	close(sock);
	if (n != sizeof(reply))
		return -ECONNRESET;
	return reply.type == HMM__MSG_WELCOME ? reply.status : -EPROTO;
}

/* The token another process asked for, for present_stolen(). */
static uint64_t stolen[HMM_TOKEN_WORDS];

static int present_stolen(const char *name)
{
	int st = present(name, stolen);

	if (st) {
		errno = -st;
		return -1;
	}
	return 0;
}

Test(session, a_token_works_once_and_only_for_the_process_that_asked)
{
	int fd = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	struct hmm_attach a = { .index = 0 };
	uint64_t forged[HMM_TOKEN_WORDS] = { 1, 2 };
	pid_t pid;
	int status;

	cr_assert_eq(ioctl(fd, HMM_IOC_ATTACH, &a), 0, "%m");
	cr_assert_neq(a.socket[0], '\0');
	cr_assert_eq(present(a.socket, forged), -EACCES, "a forged token is refused");
	/* Another process of the same user may not use it: the token is burnt. */
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(present(a.socket, a.token) == -EACCES ? 0 : 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "another process redeemed the token");
	cr_assert_eq(present(a.socket, a.token), -EACCES, "a token burnt by a thief stays burnt");
	/* A fresh one: works once, then never again. */
	cr_assert_eq(ioctl(fd, HMM_IOC_ATTACH, &a), 0);
	cr_assert_eq(present(a.socket, a.token), 0);
	cr_assert_eq(present(a.socket, a.token), -EACCES, "replayed");
	/* And another user cannot redeem root's. */
	cr_assert_eq(ioctl(fd, HMM_IOC_ATTACH, &a), 0);
	memcpy(stolen, a.token, sizeof(stolen));
	assert_nobody_gets(present_stolen, a.socket, EACCES);
	close(fd);
}

Test(session, a_client_that_breaks_the_protocol_is_dropped_and_others_go_on)
{
	int fd = open(mnt.dir, O_RDONLY | O_DIRECTORY);
	struct hmm_attach a = { .index = 0 };
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct hmm__client *c;
	char junk[5] = "junk";
	int sock;

	cr_assert_eq(ioctl(fd, HMM_IOC_ATTACH, &a), 0);
	close(fd);
	memcpy(addr.sun_path + 1, a.socket, strlen(a.socket));
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(sock, (struct sockaddr *)&addr,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
					 strlen(a.socket))), 0);
	cr_assert_eq(send(sock, junk, sizeof(junk), MSG_NOSIGNAL), (ssize_t)sizeof(junk));
	cr_assert_eq(recv(sock, junk, sizeof(junk), 0), 0, "the daemon hangs up");
	close(sock);
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	hmm__client_detach(c);
}

Test(session, a_grant_shares_the_files_device_pages_with_the_daemon)
{
	struct hmm_device_pages *dp = malloc(sizeof(*dp));
	struct hmm__client *c;
	unsigned char buf[PAGE], *mem;
	struct stat st;
	bool writable = false;
	int fd, memfd;

	fd = file_on("f", 0, O_RDWR);
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	cr_assert_eq(hmm__client_grant(c, fd, &memfd, &writable, NULL), 0);
	cr_assert(writable);
	cr_assert_eq(fstat(memfd, &st), 0);
	mem = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	cr_assert_neq(mem, MAP_FAILED, "%m");
	device_pages(fd, 0, 0, NPAGES, dp);
	cr_assert_eq(dp->count, NPAGES);
	for (unsigned i = 0; i < NPAGES; i++) {
		cr_assert_neq(dp->where[i], HMM_DEVICE_PAGE_ABSENT, "page %u", i);
		cr_assert_lt(dp->where[i], (uint64_t)st.st_size);
		memcpy(buf, mem + dp->where[i], PAGE);
		cr_assert_eq(pattern_check(buf, PAGE, (unsigned long long)i * PAGE, 7), -1,
			     "page %u as the device holds it", i);
	}
	/* A store into device memory is the file's data. */
	mem[dp->where[3] + 10] ^= 0xff;
	migrate(fd, HMM_LOC_HOST);
	cr_assert_eq(pread(fd, buf, PAGE, 3 * PAGE), PAGE);
	cr_assert_eq(pattern_check(buf, PAGE, 3 * PAGE, 7), 10,
		     "the device's store is in the file, at byte 10 of page 3");
	/* Back in host RAM: no page is on the device. */
	device_pages(fd, 0, 0, NPAGES, dp);
	for (unsigned i = 0; i < NPAGES; i++)
		cr_assert_eq(dp->where[i], HMM_DEVICE_PAGE_ABSENT);
	/* Pages on the other device are not this memory's either. */
	migrate(fd, 1);
	device_pages(fd, 0, 0, NPAGES, dp);
	cr_assert_eq(dp->where[0], HMM_DEVICE_PAGE_ABSENT);
	munmap(mem, (size_t)st.st_size);
	close(memfd);
	hmm__client_detach(c);
	close(fd);
	free(dp);
}

Test(session, a_read_only_open_gets_read_only_device_memory)
{
	struct hmm__client *c;
	bool writable = true;
	void *m;
	int fd, memfd;

	fd = file_on("ro", 0, O_RDONLY);
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	cr_assert_eq(hmm__client_grant(c, fd, &memfd, &writable, NULL), 0);
	cr_assert_not(writable);
	cr_assert_eq(fcntl(memfd, F_GETFL) & O_ACCMODE, O_RDONLY);
	cr_assert_eq(mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0), MAP_FAILED);
	cr_assert_eq(errno, EACCES, "the kernel refuses a writable shared mapping");
	m = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, memfd, 0);
	cr_assert_neq(m, MAP_FAILED);
	cr_assert_eq(mprotect(m, PAGE, PROT_READ | PROT_WRITE), -1, "and cannot upgrade it");
	cr_assert_neq(ftruncate(memfd, 0), 0, "nor shrink it");
	munmap(m, PAGE);
	close(memfd);
	hmm__client_detach(c);
	close(fd);
}

Test(session, a_grant_needs_a_session_of_the_same_process)
{
	struct hmm_grant g = { .index = 0 };
	struct hmm__client *c;
	int fd = file_on("g", 0, O_RDWR), dir = open(mnt.dir, O_RDONLY | O_DIRECTORY);

	expect_ioctl_fails(dir, HMM_IOC_GRANT, &g, ENOTTY); /* a directory has no memory */
	g.index = 2;
	expect_ioctl_fails(fd, HMM_IOC_GRANT, &g, ENODEV);
	g.index = 0;
	g.flags = 4;
	expect_ioctl_fails(fd, HMM_IOC_GRANT, &g, EINVAL);
	/* A grant token presented as an attach token is refused. */
	g.flags = 0;
	cr_assert_eq(ioctl(fd, HMM_IOC_GRANT, &g), 0);
	{
		struct hmm_attach a = { .index = 0 };

		cr_assert_eq(ioctl(dir, HMM_IOC_ATTACH, &a), 0);
		cr_assert_eq(present(a.socket, g.token), -EACCES);
	}
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	hmm__client_detach(c);
	close(dir);
	close(fd);
}

Test(session, device_pages_checks_its_arguments)
{
	struct hmm_device_pages *dp = calloc(1, sizeof(*dp));
	int fd = file_on("dp", 0, O_RDONLY);

	dp->count = 1;
	dp->offset = 100;
	expect_ioctl_fails(fd, HMM_IOC_DEVICE_PAGES, dp, EINVAL);
	dp->offset = 0;
	dp->count = 0;
	expect_ioctl_fails(fd, HMM_IOC_DEVICE_PAGES, dp, EINVAL);
	dp->count = HMM_DEVICE_PAGES_MAX + 1;
	expect_ioctl_fails(fd, HMM_IOC_DEVICE_PAGES, dp, EINVAL);
	dp->count = 1;
	dp->index = 7;
	expect_ioctl_fails(fd, HMM_IOC_DEVICE_PAGES, dp, ENODEV);
	/* Past the end of the file: nothing answered. */
	device_pages(fd, 0, 1 << 20, 4, dp);
	cr_assert_eq(dp->count, 0);
	device_pages(fd, 0, (NPAGES - 2) * PAGE, 8, dp);
	cr_assert_eq(dp->count, 2, "stops at the end of the file");
	close(fd);
	free(dp);
}

/* The daemon's open descriptors. */
static int daemon_fds(void)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)mnt.pid);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

Test(session, a_client_killed_while_mapping_device_memory_leaves_nothing_behind)
{
	int fd = file_on("k", 0, O_RDWR), before, after = -1, status;
	pid_t pid;

	skip_under_sanitizers_if_children_start_threads();
	before = daemon_fds();
	for (int round = 0; round < 5; round++) {
		pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			struct hmm__client *c;
			int memfd;
			volatile unsigned char *m;

			if (hmm__client_attach(mnt.dir, 0, NULL, NULL, &c) ||
			    hmm__client_grant(c, fd, &memfd, NULL, NULL))
				_exit(1);
			m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
			if (m == MAP_FAILED)
				_exit(1);
			(void)m[0];
			raise(SIGKILL);
			_exit(1);
		}
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFSIGNALED(status), "the child failed before it was killed");
	}
	/* The daemon drops each session when it sees the connection close. */
	for (int i = 0; i < 200 && (after = daemon_fds()) != before; i++)
		usleep(10000);
	cr_assert_eq(after, before, "the daemon holds %d descriptors, had %d", after, before);
	/* The file is whole and still moves. */
	migrate(fd, HMM_LOC_HOST);
	expect_pattern(fd, 0, NPAGES * PAGE, 7);
	migrate(fd, 1);
	expect_pattern(fd, 0, NPAGES * PAGE, 7);
	close(fd);
}

static bool all_zero(const unsigned char *p)
{
	for (size_t i = 0; i < PAGE; i++)
		if (p[i])
			return false;
	return true;
}

Test(session, removing_a_file_punches_its_device_memory_out_of_every_mapping)
{
	struct hmm_device_pages *dp = malloc(sizeof(*dp));
	struct hmm__client *c;
	unsigned char *mem;
	struct stat st;
	int fd, memfd;

	fd = file_on("gone", 0, O_RDWR);
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, NULL, NULL, &c), 0);
	cr_assert_eq(hmm__client_grant(c, fd, &memfd, NULL, NULL), 0);
	cr_assert_eq(fstat(memfd, &st), 0);
	mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, memfd, 0);
	cr_assert_neq(mem, MAP_FAILED);
	device_pages(fd, 0, 0, 1, dp);
	cr_assert_not(all_zero(mem + dp->where[0]), "the pattern is there first");
	hmm__client_detach(c); /* the session's grant no longer pins the file */
	cr_assert_eq(unlink(mp("gone")), 0);
	close(fd);
	/* The daemon hears of the last close a moment after it returns. */
	for (int i = 0; i < 200 && !all_zero(mem + dp->where[0]); i++)
		usleep(10000);
	cr_assert(all_zero(mem + dp->where[0]), "the memory was punched out");
	munmap(mem, (size_t)st.st_size);
	close(memfd);
	free(dp);
}

/* ---- invalidation ------------------------------------------------------- */

/* A delay_ms that makes the callback wait until the test releases it. */
#define HANG UINT32_MAX

/* What a client's invalidate callback saw, checked while the daemon waits. */
struct watcher {
	int fd;                   /* the file, for HMM_IOC_DEVICE_PAGES */
	const unsigned char *mem; /* its device memory, mapped */
	uint64_t where[NPAGES];   /* where its pages were before */
	uint64_t grant;
	unsigned delay_ms;        /* how long to take before answering */
	/*
	 * The test thread and the callback order their accesses through the
	 * daemon (a request, its invalidation, the answer), which no tool
	 * sees; so they also publish them: the test sets armed (release) once
	 * the watcher is set up, the callback reads it (acquire) first; the
	 * callback counts calls (release) last, the test reads calls()
	 * (acquire) before what the callback wrote.  What the callback
	 * writes is atomic (read with SEEN()): a later invalidation may come
	 * while the test reads.
	 */
	bool armed;               /* atomic */
	int calls;                /* atomic */
	int still_there;          /* atomic: pages whose data was still in place */
	int handed_out;           /* atomic: pages HMM_IOC_DEVICE_PAGES still gave out */
	uint64_t first, last, got_grant; /* atomic */
	bool released;            /* atomic: for a callback told to hang */
};

#define SEEN(w, field) __atomic_load_n(&(w).field, __ATOMIC_RELAXED)

static int calls(struct watcher *w)
{
	return __atomic_load_n(&w->calls, __ATOMIC_ACQUIRE);
}

static void on_inval(void *arg, uint64_t grant, uint64_t first, uint64_t last)
{
	struct watcher *w = arg;
	struct hmm_device_pages dp = { .offset = 0, .index = 0, .count = NPAGES };
	unsigned char buf[PAGE];

	if (!__atomic_load_n(&w->armed, __ATOMIC_ACQUIRE))
		return; /* not set up yet: nothing of it to check */
	__atomic_store_n(&w->got_grant, grant, __ATOMIC_RELAXED);
	__atomic_store_n(&w->first, first, __ATOMIC_RELAXED);
	__atomic_store_n(&w->last, last, __ATOMIC_RELAXED);
	/* The daemon has not touched the pages yet: still in place... */
	for (uint64_t i = first; i <= last && i < NPAGES; i++) {
		memcpy(buf, w->mem + w->where[i], PAGE);
		__atomic_add_fetch(&w->still_there,
				   pattern_check(buf, PAGE, i * PAGE, 7) == -1, __ATOMIC_RELAXED);
	}
	/* ...and nobody is handed them any more. */
	if (ioctl(w->fd, HMM_IOC_DEVICE_PAGES, &dp) == 0)
		for (uint64_t i = first; i <= last && i < dp.count; i++)
			__atomic_add_fetch(&w->handed_out,
					   dp.where[i] != HMM_DEVICE_PAGE_ABSENT, __ATOMIC_RELAXED);
	if (w->delay_ms == HANG)
		for (int i = 0; i < 3000 && !__atomic_load_n(&w->released, __ATOMIC_ACQUIRE); i++)
			usleep(10000);
	else
		usleep(w->delay_ms * 1000);
	__atomic_add_fetch(&w->calls, 1, __ATOMIC_RELEASE);
}

struct watched {
	struct hmm__client *c;
	struct watcher w;
	int memfd;
	void *map;
	size_t len;
};

/* A file on device 0 whose memory a client maps, with on_inval watching. */
static void watch(struct watched *x, const char *rel, unsigned delay_ms)
{
	struct hmm_device_pages dp;
	struct stat st;

	memset(x, 0, sizeof(*x));
	x->w.fd = file_on(rel, 0, O_RDWR);
	x->w.delay_ms = delay_ms;
	cr_assert_eq(hmm__client_attach(mnt.dir, 0, on_inval, &x->w, &x->c), 0);
	cr_assert_eq(hmm__client_grant(x->c, x->w.fd, &x->memfd, NULL, &x->w.grant), 0);
	cr_assert_eq(fstat(x->memfd, &st), 0);
	x->len = (size_t)st.st_size;
	x->map = mmap(NULL, x->len, PROT_READ, MAP_SHARED, x->memfd, 0);
	cr_assert_neq(x->map, MAP_FAILED);
	x->w.mem = x->map;
	device_pages(x->w.fd, 0, 0, NPAGES, &dp);
	for (unsigned i = 0; i < NPAGES; i++) {
		cr_assert_neq(dp.where[i], HMM_DEVICE_PAGE_ABSENT);
		x->w.where[i] = dp.where[i];
	}
	__atomic_store_n(&x->w.armed, true, __ATOMIC_RELEASE);
}

static void unwatch(struct watched *x)
{
	__atomic_store_n(&x->w.released, true, __ATOMIC_RELEASE);
	hmm__client_detach(x->c);
	munmap(x->map, x->len);
	close(x->memfd);
	close(x->w.fd);
}

static double since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) * 1e-9;
}

Test(session, a_migration_off_the_device_waits_for_the_sessions_answer)
{
	struct watched x;
	struct timespec before;
	struct hmm_device_pages dp;

	watch(&x, "mig", 100);
	clock_gettime(CLOCK_MONOTONIC, &before);
	migrate(x.w.fd, HMM_LOC_HOST);
	cr_assert_eq(calls(&x.w), 1, "one invalidation for the chunk");
	cr_assert_eq(SEEN(x.w, got_grant), x.w.grant);
	cr_assert_eq(SEEN(x.w, first), 0);
	cr_assert_eq(SEEN(x.w, last), NPAGES - 1);
	cr_assert_eq(SEEN(x.w, still_there), NPAGES, "the pages waited for the answer");
	cr_assert_eq(SEEN(x.w, handed_out), 0, "moving pages are not handed out");
	cr_assert_geq(since(&before), 0.1, "the migration returned before the answer");
	device_pages(x.w.fd, 0, 0, NPAGES, &dp);
	cr_assert_eq(dp.where[0], HMM_DEVICE_PAGE_ABSENT);
	expect_pattern(x.w.fd, 0, NPAGES * PAGE, 7);
	/* Moving onto the device takes the CPU's pages, which a mirror may map
	 * too: the sessions hear of it as well. */
	migrate(x.w.fd, 0);
	cr_assert_eq(calls(&x.w), 2);
	unwatch(&x);
}

Test(session, a_cpu_read_that_brings_a_page_back_invalidates_it_first)
{
	struct watched x;
	unsigned char buf[PAGE];

	watch(&x, "cpu", 0);
	cr_assert_eq(pread(x.w.fd, buf, PAGE, 5 * PAGE), PAGE);
	cr_assert_eq(pattern_check(buf, PAGE, 5 * PAGE, 7), -1);
	cr_assert_geq(calls(&x.w), 1);
	cr_assert_leq(SEEN(x.w, first), 5);
	cr_assert_geq(SEEN(x.w, last), 5);
	cr_assert_eq(SEEN(x.w, still_there), (int)(SEEN(x.w, last) - SEEN(x.w, first) + 1 < NPAGES
					    ? SEEN(x.w, last) - SEEN(x.w, first) + 1 : NPAGES - SEEN(x.w, first)),
		     "every invalidated page was still in place");
	cr_assert_eq(SEEN(x.w, handed_out), 0, "fenced pages are not handed out");
	unwatch(&x);
}

Test(session, truncation_invalidates_the_pages_it_frees)
{
	struct watched x;

	watch(&x, "trunc", 0);
	cr_assert_eq(ftruncate(x.w.fd, 4 * PAGE), 0);
	cr_assert_eq(calls(&x.w), 1);
	cr_assert_eq(SEEN(x.w, first), 4);
	cr_assert_eq(SEEN(x.w, last), UINT64_MAX);
	cr_assert_eq(SEEN(x.w, still_there), NPAGES - 4);
	expect_pattern(x.w.fd, 0, 4 * PAGE, 7);
	unwatch(&x);
}

Test(session, a_session_that_never_answers_is_ended_and_the_change_goes_on)
{
	struct watched x;
	struct timespec before;
	int memfd;

	watch(&x, "hang", HANG);
	clock_gettime(CLOCK_MONOTONIC, &before);
	migrate(x.w.fd, HMM_LOC_HOST);
	cr_assert_lt(since(&before), 30, "the migration waited for a hung client");
	cr_assert_geq(since(&before), 4, "the daemon gives a session 5 s");
	expect_pattern(x.w.fd, 0, NPAGES * PAGE, 7);
	__atomic_store_n(&x.w.released, true, __ATOMIC_RELEASE);
	/* The session is over: requests fail. */
	for (int i = 0; i < 100 && hmm__client_grant(x.c, x.w.fd, &memfd, NULL, NULL) == 0; i++) {
		close(memfd);
		usleep(10000);
	}
	cr_assert_neq(hmm__client_grant(x.c, x.w.fd, &memfd, NULL, NULL), 0);
	unwatch(&x);
}

Test(session, files_nobody_was_granted_are_not_held_up)
{
	struct watched x;
	int other = file_on("other", 0, O_RDWR);

	watch(&x, "granted", 0);
	migrate(other, HMM_LOC_HOST);
	migrate(other, 1);
	cr_assert_eq(calls(&x.w), 0, "another file's changes are not this session's");
	close(other);
	unwatch(&x);
}

/* seen[0] counts the calls (atomic, release: published last), seen[1] and
 * [2] hold the last range. */
static void note_inval(void *arg, uint64_t grant, uint64_t first, uint64_t last)
{
	uint64_t *seen = arg;

	(void)grant;
	seen[1] = first;
	seen[2] = last;
	__atomic_add_fetch(&seen[0], 1, __ATOMIC_RELEASE);
}

static void setup_no_devices(void)
{
	mnt_setup_opts("host_mem=64M");
}

TestSuite(session_observe, .init = setup_no_devices, .fini = mnt_teardown, .timeout = 60);

Test(session_observe, an_observer_without_devices_hears_of_truncation_and_gets_no_memory)
{
	uint64_t seen[3] = { 0 };
	struct hmm_device_pages *dp = calloc(1, sizeof(*dp));
	struct hmm__client *c;
	int fd = file_on("obs", HMM_LOC_HOST, O_RDWR), memfd = -1;
	struct hmm_attach a = { .index = 0 };

	/* No device to attach to, but one can observe. */
	expect_ioctl_fails(fd, HMM_IOC_ATTACH, &a, ENODEV);
	cr_assert_eq(hmm__client_attach(mnt.dir, HMM_ATTACH_OBSERVE, note_inval, seen, &c), 0);
	cr_assert_eq(hmm__client_grant(c, fd, &memfd, NULL, NULL), 0);
	cr_assert_eq(memfd, -1, "an observer gets no memory");
	dp->index = HMM_ATTACH_OBSERVE;
	dp->count = 1;
	expect_ioctl_fails(fd, HMM_IOC_DEVICE_PAGES, dp, ENODEV);
	/* Host pages taken away are told too: the observer may map them. */
	cr_assert_eq(ftruncate(fd, 4 * PAGE), 0);
	cr_assert_eq(__atomic_load_n(&seen[0], __ATOMIC_ACQUIRE), 1);
	cr_assert_eq(seen[1], 4);
	/* Writes in place take nothing away: nothing is told. */
	write_pattern(fd, 0, PAGE, 9);
	cr_assert_eq(__atomic_load_n(&seen[0], __ATOMIC_ACQUIRE), 1);
	hmm__client_detach(c);
	close(fd);
	free(dp);
}
