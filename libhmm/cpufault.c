/* SPDX-License-Identifier: MIT */
/*
 * cpufault.c - this process's userfaultfd: CPU faults on anonymous memory
 * that migrated to a device (the kernel's migrate_to_ram callback) and, in
 * libhmm.so only, the non-cooperative events that uffd.c turns into
 * invalidations.
 *
 * Anonymous memory that migrate.c moves to a device has no CPU page any
 * more: its range is registered here in MISSING and write-protect mode, so
 * a CPU access to it, or a write to a page that is being migrated
 * (write-protected meanwhile), stops the faulting thread and sends us a
 * message.  The server thread asks migrate.c to resolve each
 * (hmm__anon_cpu_fault): bring the page back, or fill a hole with zeros, or
 * lift a write protection.  A fault on a page in the middle of a migration
 * cannot be resolved yet: the server keeps it and tries again when a
 * migration ends (hmm__cpufault_kick), so that it never waits for a
 * migration whose copy might itself fault.
 *
 * One userfaultfd, because a mapping can be registered on one only: the
 * ranges that uffd.c watches for events (write-protect mode, with nothing
 * ever write-protected, so no fault comes from them) and the ranges of
 * migrated pages are registered on the same one, and a range can be both.
 * The kernel keeps the stronger registration: registering a range for WP
 * alone leaves a range already registered for MISSING|WP as it is.
 *
 * Threads, and why there are two.  A thread that causes an event (munmap,
 * madvise DONTNEED, mremap, fork on a registered range) sleeps in the
 * kernel until the event is read, and migrate.c causes such events itself
 * (it zaps CPU pages with MADV_DONTNEED under anon.lock) while the server,
 * resolving a fault, may wait for anon.lock.  So reading and serving are
 * split:
 *  - the reader only reads: it puts fault messages on a fixed ring for the
 *    server and hands events to uffd.c's sink, which queues them without
 *    waiting.  It holds only leaf locks (q_lock, own_lock, read_lock, the
 *    sink's ring lock) and never allocates, frees or unmaps, so it can
 *    neither cause an event nor wait for a thread that sleeps in one;
 *  - the server resolves faults and may wait for anything a migration holds.
 * A fault that does not fit in the ring is not lost: the server wakes every
 * faulting thread, and each faults again.
 *
 * libhmm's own changes.  The CPU pages migrate.c zaps raise REMOVE events;
 * they are its own, already bracketed by an HMM_NOTIFY_MIGRATE invalidation,
 * and turning them into HMM_NOTIFY_CLEAR would kill the pages being moved.
 * Such a change is announced (hmm__cpufault_own_begin/end) around the
 * system call, and the reader drops an event whose range lies inside an
 * announced one.  The read() that takes an event also releases the thread
 * that raised it, before the reader looks at the message, so the
 * announcement is withdrawn only once the reader has handed on everything
 * that read() returned (the reader holds read_lock from read() until then,
 * and hmm__cpufault_own_end takes it).  An unrelated change of the same
 * range at the same moment by another thread is dropped too (see uffd.c).
 *
 * Registration splits mappings at its edges, like mprotect; it ends with
 * the mapping.  Without uffd.c (the hmmfs daemon's libhmm-core) no event
 * is asked for, and a child of fork() starts without registrations; with
 * it, UFFD_FEATURE_EVENT_FORK hands us the child's userfaultfd, which the
 * reader closes at once: the child loses its registrations either way.
 * fork() brings device pages back to host RAM first (invalidate.c), so no
 * page of the child is missing its data.
 *
 * The server also keeps a fault on a page that a change read but not yet
 * invalidated has cleared (uffd.c's pending()): a device page a raw
 * MADV_DONTNEED took must read zeros, not come back; the dispatcher kicks
 * the server when it is done.
 *
 * Lock order: mon.lock (start) before the rest.  The reader holds
 * read_lock over own_lock, q_lock and the sink's ring lock, all leaves;
 * nobody waits for anything else while holding one of them.  own_end and
 * sync take read_lock alone (a barrier: taken and dropped).
 */
#define _GNU_SOURCE
#include "config.h"
#include "hmm-internal.h"
#include "pagetable.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define FAULT_RING 1024 /* fault words between reader and server; power of two */
#define READ_BATCH 16   /* messages per read() */
#define NOWN 64         /* own changes announced at once */

const struct hmm__uffd_source *hmm__uffd_source;

static struct {
	pthread_mutex_t lock;   /* start; outermost */
	int uffd;               /* -1 until started */
	pthread_t reader, server;
	bool started;           /* atomic for the fast path; written under lock */
	int start_err;          /* 0, or why the monitor cannot run */
	bool events;            /* the sink's events were granted; immutable once started */

	/* Reader to server. */
	pthread_mutex_t q_lock; /* leaf */
	pthread_cond_t q_cond;
	uint64_t ring[FAULT_RING]; /* protected by q_lock */
	uint64_t head, tail;       /* protected by q_lock; head <= tail <= head + FAULT_RING */
	bool lost;              /* a fault did not fit; protected by q_lock */
	bool kicked;            /* a migration ended; protected by q_lock */

	/* Held by the reader from read() until what it read is handed on. */
	pthread_mutex_t read_lock;

	/* Changes libhmm makes itself; end == 0: a free slot. */
	pthread_mutex_t own_lock; /* leaf */
	uint64_t own_start[NOWN], own_end[NOWN]; /* protected by own_lock */

	/* Faults waiting for a migration to end; the server's own. */
	uint64_t *deferred;
	size_t ndeferred, cap;
} mon = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.q_lock = PTHREAD_MUTEX_INITIALIZER,
	.q_cond = PTHREAD_COND_INITIALIZER,
	.read_lock = PTHREAD_MUTEX_INITIALIZER,
	.own_lock = PTHREAD_MUTEX_INITIALIZER,
	.uffd = -1,
};

static HMM_THREAD_LOCAL bool on_server;

static uint64_t page_size(void)
{
	return hmm__sys_page_size();
}

/* Keep a fault word for later.  Return: false if memory ran out. */
static bool defer(uint64_t word)
{
	if (mon.ndeferred == mon.cap) {
		size_t cap = mon.cap ? mon.cap * 2 : 64;
		uint64_t *d = hmm__realloc(mon.deferred, cap * sizeof(*d));

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
	/* A page that a raw MADV_DONTNEED took while it was on a device must
	 * read zeros, not come back: wait for the invalidation that frees it
	 * (the dispatcher kicks us).  Its own faults cannot be in such a
	 * range, unless the program dropped libhmm's memory. */
	if (mon.events && hmm__uffd_source->pending(word & ~1ULL) && defer(word))
		return;
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
	hmm__free(d);
}

/* Is [start, end) inside a change libhmm announced?  Context: the reader. */
static bool own_change(uint64_t start, uint64_t end)
{
	bool own = false;

	pthread_mutex_lock(&mon.own_lock);
	for (unsigned i = 0; i < NOWN && !own; i++)
		own = mon.own_end[i] && mon.own_start[i] <= start && end <= mon.own_end[i];
	pthread_mutex_unlock(&mon.own_lock);
	return own;
}

/* An event, to the sink unless it is libhmm's own.  Context: the reader. */
static void event(const struct uffd_msg *m)
{
	uint64_t start, end;

	switch (m->event) {
	case UFFD_EVENT_FORK:
		/* The child's registrations: closing its userfaultfd drops them
		 * (see the top).  A descriptor, not memory: no event. */
		close((int)m->arg.fork.ufd);
		start = 0;
		end = HMM__VA_LIMIT;
		break;
	case UFFD_EVENT_REMAP:
		start = m->arg.remap.from;
		end = start + m->arg.remap.len;
		break;
	case UFFD_EVENT_UNMAP:
	case UFFD_EVENT_REMOVE:
		start = m->arg.remove.start;
		end = m->arg.remove.end;
		break;
	default:
		return;
	}
	if (start >= end || !mon.events)
		return;
	if (m->event == UFFD_EVENT_UNMAP || m->event == UFFD_EVENT_REMAP)
		hmm__uffd_source->unmapped();
	if (own_change(start, end))
		return;
	hmm__uffd_source->event(m->event, start, end);
}

static void *reader_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p = { .fd = mon.uffd, .events = POLLIN };
		struct uffd_msg msgs[READ_BATCH];
		bool faults = false;
		ssize_t n;

		if (poll(&p, 1, -1) < 0)
			continue; /* EINTR */
		pthread_mutex_lock(&mon.read_lock);
		n = read(mon.uffd, msgs, sizeof(msgs));
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			uint64_t word;

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
				event(&msgs[i]);
				continue;
			}
			word = (msgs[i].arg.pagefault.address & ~(page_size() - 1)) |
			       (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP ? 1 : 0);
			pthread_mutex_lock(&mon.q_lock);
			if (mon.tail - mon.head < FAULT_RING)
				mon.ring[mon.tail++ % FAULT_RING] = word;
			else
				mon.lost = true;
			pthread_mutex_unlock(&mon.q_lock);
			faults = true;
		}
		pthread_mutex_unlock(&mon.read_lock);
		if (faults)
			pthread_cond_signal(&mon.q_cond);
	}
	return NULL;
}

/*
 * The reader's stack is libhmm's own (a migration must not take it), and
 * made here: the thread that records its own stack asks the C library,
 * which allocates, and the reader must never allocate (a fork() holds
 * malloc's locks while it waits for the reader to read its event).  The
 * reader lives as long as the process.  Untouched pages cost nothing, and
 * ThreadSanitizer keeps almost 1 MiB of its own at a stack's top.
 */
#define READER_STACK ((size_t)4 << 20)

static int start_reader(void)
{
	size_t ps = (size_t)hmm__sys_page_size();
	char *m = hmm__own_mmap(NULL, ps + READER_STACK, PROT_READ | PROT_WRITE, MAP_NORESERVE);
	pthread_attr_t attr;
	int err;

	if (m == MAP_FAILED)
		return -ENOMEM;
	syscall(SYS_mprotect, m, ps, PROT_NONE); /* a guard page below it */
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, m + ps, READER_STACK);
	err = -pthread_create(&mon.reader, &attr, reader_main, NULL);
	pthread_attr_destroy(&attr);
	if (err)
		hmm__own_munmap(m, ps + READER_STACK);
	return err;
}

static void *server_main(void *arg)
{
	void *stack = hmm__own_stack_begin(); /* not for a migration to take */
	uint64_t batch[READ_BATCH];

	(void)arg;
	on_server = true;
	pthread_mutex_lock(&mon.q_lock);
	for (;;) {
		bool kicked, lost;
		size_t n = 0;

		while (mon.head == mon.tail && !mon.kicked && !mon.lost)
			pthread_cond_wait(&mon.q_cond, &mon.q_lock);
		while (mon.head != mon.tail && n < READ_BATCH)
			batch[n++] = mon.ring[mon.head++ % FAULT_RING];
		kicked = mon.kicked;
		lost = mon.lost;
		mon.kicked = mon.lost = false;
		pthread_mutex_unlock(&mon.q_lock);
		if (kicked)
			retry_deferred();
		for (size_t i = 0; i < n; i++)
			serve(batch[i]);
		if (lost) {
			/* Every waiting thread runs its access again and faults
			 * again if it must, this time with room in the ring. */
			struct uffdio_range r = {
				.start = page_size() * 16,
				.len = (1ULL << 47) - page_size() * 17,
			};

			(void)ioctl(mon.uffd, UFFDIO_WAKE, &r);
		}
		pthread_mutex_lock(&mon.q_lock);
	}
	hmm__own_stack_end(stack);
	return NULL;
}

/* In a child after fork(): the descriptor is the parent's, the threads are gone. */
static void forget_in_child(void)
{
	if (mon.uffd >= 0)
		close(mon.uffd);
	mon.uffd = -1;
	mon.started = false;
	mon.start_err = 0;
	mon.events = false;
	hmm__free(mon.deferred);
	mon.deferred = NULL;
	mon.ndeferred = mon.cap = 0;
	mon.head = mon.tail = 0;
	mon.lost = mon.kicked = false;
	memset(mon.own_end, 0, sizeof(mon.own_end));
	pthread_mutex_init(&mon.lock, NULL);
	pthread_mutex_init(&mon.q_lock, NULL);
	pthread_cond_init(&mon.q_cond, NULL);
	pthread_mutex_init(&mon.read_lock, NULL);
	pthread_mutex_init(&mon.own_lock, NULL);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void install_atfork(void)
{
	pthread_atfork(NULL, NULL, forget_in_child);
}

static int open_uffd(int flags)
{
	/* Faults the kernel takes on our behalf (read(2) into such memory,
	 * MADV_POPULATE_READ in hmm_range_fault) must reach us too; only a
	 * process without CAP_SYS_PTRACE on a system that limits userfaultfd
	 * (vm.unprivileged_userfaultfd = 0) is held to user-mode faults, which
	 * makes those calls fail with EFAULT on pages that are on a device. */
	int fd = (int)syscall(SYS_userfaultfd, flags);

	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	return fd;
}

/*
 * The features the sink wants that this kernel has: asked of a throw-away
 * userfaultfd, since UFFDIO_API can be called once per descriptor and
 * fails as a whole if one feature is missing.
 */
static uint64_t sink_features(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t want = hmm__uffd_source ? hmm__uffd_source->features : 0;
	int fd;

	if (!want)
		return 0;
	fd = open_uffd(O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		api.features = 0;
	close(fd);
	if ((api.features & hmm__uffd_source->required) != hmm__uffd_source->required)
		return 0;
	return want & api.features;
}

int hmm__cpufault_start(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t requested;
	int err = 0;

	if (__atomic_load_n(&mon.started, __ATOMIC_ACQUIRE))
		return 0;
	pthread_once(&atfork_once, install_atfork);
	pthread_mutex_lock(&mon.lock);
	if (mon.started || mon.start_err) {
		err = mon.start_err;
		goto out;
	}
	requested = sink_features();
	api.features = requested;
	mon.uffd = open_uffd(O_CLOEXEC | O_NONBLOCK);
	if (mon.uffd < 0) {
		err = errno == ENOSYS || errno == EPERM ? -EOPNOTSUPP : -errno;
		goto fail;
	}
	if (ioctl(mon.uffd, UFFDIO_API, &api) < 0 ||
	    !(api.ioctls & (1ULL << _UFFDIO_REGISTER))) {
		err = -EOPNOTSUPP;
		goto fail;
	}
	/* sink_features() asked for all the events the sink needs, or none.
	 * (UFFDIO_API writes back every feature the kernel has.) */
	mon.events = requested != 0;
	if (mon.events) {
		err = hmm__uffd_source->start();
		if (err)
			goto fail;
	}
	err = -pthread_create(&mon.server, NULL, server_main, NULL);
	if (err)
		goto fail;
	err = start_reader();
	if (err) {
		/* The server waits for faults that cannot come: leave it. */
		pthread_detach(mon.server);
		goto fail;
	}
	__atomic_store_n(&mon.started, true, __ATOMIC_RELEASE);
	goto out;
fail:
	if (mon.uffd >= 0)
		close(mon.uffd);
	mon.uffd = -1;
	mon.events = false;
	/* Out of memory or descriptors may pass; a missing feature will not. */
	if (err == -EOPNOTSUPP)
		mon.start_err = err;
out:
	pthread_mutex_unlock(&mon.lock);
	return err;
}

bool hmm__cpufault_events(void)
{
	return __atomic_load_n(&mon.started, __ATOMIC_ACQUIRE) && mon.events;
}

bool hmm__cpufault_on_server(void)
{
	return on_server;
}

void hmm__cpufault_read_barrier(void)
{
	pthread_mutex_lock(&mon.read_lock);
	pthread_mutex_unlock(&mon.read_lock);
}

int hmm__cpufault_own_begin(uint64_t start, uint64_t end)
{
	int slot = -1;

	if (!hmm__cpufault_events())
		return -1;
	pthread_mutex_lock(&mon.own_lock);
	for (int i = 0; i < NOWN; i++) {
		if (!mon.own_end[i]) {
			mon.own_start[i] = start;
			mon.own_end[i] = end;
			slot = i;
			break;
		}
	}
	pthread_mutex_unlock(&mon.own_lock);
	return slot;
}

void hmm__cpufault_own_end(int slot)
{
	if (slot < 0)
		return;
	/* read() released us as it took our event, before the reader looked
	 * at it: the announcement stays until the reader is done with what
	 * it read. */
	hmm__cpufault_read_barrier();
	pthread_mutex_lock(&mon.own_lock);
	mon.own_end[slot] = 0;
	pthread_mutex_unlock(&mon.own_lock);
}

void hmm__cpufault_kick(void)
{
	if (!__atomic_load_n(&mon.started, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&mon.q_lock);
	mon.kicked = true;
	pthread_mutex_unlock(&mon.q_lock);
	pthread_cond_signal(&mon.q_cond);
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

int hmm__cpufault_watch(uint64_t start, uint64_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};

	if (!hmm__cpufault_events())
		return -EOPNOTSUPP;
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
		/* EAGAIN: an event is unread; the reader reads it without
		 * waiting for anyone. */
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
