/* SPDX-License-Identifier: MIT */
/*
 * cpufault.c - CPU faults on anonymous memory that migrated to a device,
 * served from a userfaultfd (the kernel's migrate_to_ram callback).
 *
 * Anonymous memory that migrate.c moves to a device has no CPU page any
 * more: its range is registered on this process's userfaultfd in MISSING
 * and write-protect mode, so a CPU access to it, or a write to a page that
 * is being migrated (write-protected meanwhile), stops the faulting thread
 * and sends us a message.  One monitor thread reads them and asks
 * migrate.c to resolve each (hmm__anon_cpu_fault): bring the page back, or
 * fill a hole with zeros, or lift a write protection.  A fault on a page in
 * the middle of a migration cannot be resolved yet: the monitor keeps it
 * and tries again when a migration ends (hmm__cpufault_kick), so that it
 * never waits for a migration whose copy might itself fault.
 *
 * Registration splits mappings at its edges, like mprotect; it ends with
 * the mapping.  UFFD_FEATURE_EVENT_FORK is not asked for: a child starts
 * without registrations, and fork() brings device pages back to host RAM
 * first (invalidate.c), so no page of the child is missing its data.
 */
#define _GNU_SOURCE
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static struct {
	pthread_mutex_t lock;   /* start/stop; leaf */
	int uffd;               /* -1 until started */
	int kick;               /* eventfd: a migration ended */
	int stop;               /* eventfd: end the monitor */
	pthread_t thread;
	bool started;
	int start_err;          /* 0, or why the monitor cannot run */
	/* Faults waiting for a migration to end; the monitor's own. */
	uint64_t *deferred;
	size_t ndeferred, cap;
} mon = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.uffd = -1,
	.kick = -1,
	.stop = -1,
};

/* Keep a fault word for later.  Return: false if memory ran out. */
static bool defer(uint64_t word)
{
	if (mon.ndeferred == mon.cap) {
		size_t cap = mon.cap ? mon.cap * 2 : 64;
		uint64_t *d = realloc(mon.deferred, cap * sizeof(*d));

		if (!d)
			return false;
		mon.deferred = d;
		mon.cap = cap;
	}
	mon.deferred[mon.ndeferred++] = word;
	return true;
}

/*
 * A fault word: the page address, bit 0 set for a write-protect fault.
 * Every fault is resolved or kept: its thread sleeps until it is.  Without
 * memory to keep it, wait a little and try again (migrations end on their
 * own: they never wait for this thread).
 */
static void serve(uint64_t word)
{
	while (hmm__anon_cpu_fault(word & ~1ULL, word & 1) == -EAGAIN) {
		if (defer(word))
			return;
		usleep(1000);
	}
}

static void retry_deferred(void)
{
	size_t n = mon.ndeferred;
	uint64_t *d = mon.deferred;

	if (!n)
		return;
	mon.deferred = NULL;
	mon.ndeferred = mon.cap = 0;
	for (size_t i = 0; i < n; i++)
		serve(d[i]);
	free(d);
}

static void drain(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static void *monitor(void *arg)
{
	long ps = sysconf(_SC_PAGESIZE);

	(void)arg;
	for (;;) {
		struct pollfd p[3] = {
			{ .fd = mon.uffd, .events = POLLIN },
			{ .fd = mon.kick, .events = POLLIN },
			{ .fd = mon.stop, .events = POLLIN },
		};
		struct uffd_msg msgs[16];
		ssize_t n;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[2].revents)
			break;
		if (p[1].revents) {
			drain(mon.kick);
			retry_deferred();
		}
		if (!(p[0].revents & POLLIN))
			continue;
		n = read(mon.uffd, msgs, sizeof(msgs));
		if (n < 0)
			continue; /* EAGAIN: another wakeup consumed it */
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			uint64_t addr;

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			addr = msgs[i].arg.pagefault.address & ~(uint64_t)(ps - 1);
			serve(addr | (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP ? 1 : 0));
		}
	}
	return NULL;
}

/* In a child after fork(): the descriptors are the parent's, the thread is gone. */
static void forget_in_child(void)
{
	if (mon.uffd >= 0) {
		close(mon.uffd);
		close(mon.kick);
		close(mon.stop);
	}
	mon.uffd = mon.kick = mon.stop = -1;
	mon.started = false;
	mon.start_err = 0;
	free(mon.deferred);
	mon.deferred = NULL;
	mon.ndeferred = mon.cap = 0;
	pthread_mutex_init(&mon.lock, NULL);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void install_atfork(void)
{
	pthread_atfork(NULL, NULL, forget_in_child);
}

int hmm__cpufault_start(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int err = 0;

	pthread_once(&atfork_once, install_atfork);
	pthread_mutex_lock(&mon.lock);
	if (mon.started || mon.start_err) {
		err = mon.start_err;
		goto out;
	}
	/* Faults the kernel takes on our behalf (read(2) into such memory,
	 * MADV_POPULATE_READ in hmm_range_fault) must reach us too; only a
	 * process without CAP_SYS_PTRACE on a system that limits userfaultfd
	 * (vm.unprivileged_userfaultfd = 0) is held to user-mode faults, which
	 * makes those calls fail with EFAULT on pages that are on a device. */
	mon.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (mon.uffd < 0 && errno == EPERM)
		mon.uffd = (int)syscall(SYS_userfaultfd,
					O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (mon.uffd < 0) {
		err = errno == ENOSYS || errno == EPERM ? -EOPNOTSUPP : -errno;
		goto fail;
	}
	if (ioctl(mon.uffd, UFFDIO_API, &api) < 0 ||
	    !(api.ioctls & (1ULL << _UFFDIO_REGISTER))) {
		err = -EOPNOTSUPP;
		goto fail;
	}
	mon.kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	mon.stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mon.kick < 0 || mon.stop < 0) {
		err = -errno;
		goto fail;
	}
	err = -pthread_create(&mon.thread, NULL, monitor, NULL);
	if (err)
		goto fail;
	mon.started = true;
	goto out;
fail:
	if (mon.uffd >= 0)
		close(mon.uffd);
	if (mon.kick >= 0)
		close(mon.kick);
	if (mon.stop >= 0)
		close(mon.stop);
	mon.uffd = mon.kick = mon.stop = -1;
	/* Out of memory or descriptors may pass; a missing feature will not. */
	if (err == -EOPNOTSUPP)
		mon.start_err = err;
out:
	pthread_mutex_unlock(&mon.lock);
	return err;
}

void hmm__cpufault_kick(void)
{
	uint64_t one = 1;

	if (mon.kick >= 0)
		(void)!write(mon.kick, &one, sizeof(one));
}

int hmm__cpufault_register(uint64_t start, uint64_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};

	if (ioctl(mon.uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

int hmm__cpufault_protect(uint64_t start, uint64_t end, bool wp)
{
	struct uffdio_writeprotect w = {
		.range = { .start = start, .len = end - start },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	while (ioctl(mon.uffd, UFFDIO_WRITEPROTECT, &w) < 0) {
		if (errno != EAGAIN)
			return -errno;
	}
	return 0;
}

int hmm__cpufault_fill(uint64_t va, const void *src, size_t len, bool wp, bool wake)
{
	struct uffdio_copy c = {
		.dst = va,
		.src = (uint64_t)(uintptr_t)src,
		.len = len,
		.mode = (wp ? UFFDIO_COPY_MODE_WP : 0) | (wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE),
	};

	while (ioctl(mon.uffd, UFFDIO_COPY, &c) < 0) {
		if (errno == EAGAIN)
			continue;
		/* EEXIST: a page is there already (not ours to fill). */
		return -errno;
	}
	return 0;
}

int hmm__cpufault_wake(uint64_t start, uint64_t end)
{
	struct uffdio_range r = { .start = start, .len = end - start };

	return ioctl(mon.uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}
