/* SPDX-License-Identifier: MIT */
/*
 * Invalidation sources, part two: userfaultfd non-cooperative events.  They
 * see what the interposed libc entry points (invalidate.c) cannot: raw
 * system calls, and libc's own internal calls (free() unmapping a large
 * block, realloc() moving one with mremap, malloc_trim() and arena trimming
 * with MADV_DONTNEED, the heap shrinking with brk).
 *
 *   UFFD_EVENT_UNMAP   munmap, mmap MAP_FIXED over it, brk shrinking,
 *                      mremap shrinking            -> HMM_NOTIFY_UNMAP
 *   UFFD_EVENT_REMAP   mremap moving it            -> HMM_NOTIFY_UNMAP over
 *                                                     the old range
 *   UFFD_EVENT_REMOVE  madvise DONTNEED, FREE, REMOVE -> HMM_NOTIFY_CLEAR
 *   UFFD_EVENT_FORK    fork, clone without CLONE_VM -> HMM_NOTIFY_PROTECTION_PAGE
 *                                                     over the address space
 * Not seen: mprotect, MADV_PAGEOUT, shmdt (none raises an event).
 *
 * What is watched.  Private anonymous mappings (malloc, the heap, thread
 * stacks, MAP_PRIVATE|MAP_ANONYMOUS) that a range fault (hmm_range_fault,
 * so every mirror fault) walks: range.c hands each such mapping to watch(),
 * which registers all of it on cpufault.c's userfaultfd in write-protect
 * mode.  Nothing is ever write-protected there, so no page fault comes of
 * it; only the events asked for at UFFDIO_API do.  UFFDIO_REGISTER takes
 * the mm's lock for writing even over a mapping already registered, and
 * so waits for every range fault populating memory (MADV_POPULATE_* holds
 * it for reading): asked once per fault round, it made the device faults of
 * several compute units take turns.  So the mappings registered are
 * remembered (watched[], a few, the most recent) and not asked again.  A
 * registered mapping cannot go without an UNMAP or REMAP event (munmap,
 * mmap MAP_FIXED over it, brk, mremap), and every such event, libhmm's own
 * changes included, forgets them all (unmapped()): a new mapping at the
 * same place is registered afresh.  The reader handles the event before a
 * later range fault walks (sync() waits for it), and a registration that
 * races an event is not remembered (the unmaps count).
 * Registering at hmm_interval_notifier_insert() instead would not do: a
 * mirror subscribes to the whole address space, most of it not mapped yet.
 * Not watched, so covered by interposition only (and an hmmfs file by
 * hmmfs): mappings of regular files, whose write-protect registration needs
 * UFFD_FEATURE_WP_ASYNC, which the synchronous write protection of
 * migration cannot share a userfaultfd with; and shared memory (shmem,
 * memfd, MAP_SHARED|MAP_ANONYMOUS), which UFFD_FEATURE_WP_HUGETLBFS_SHMEM
 * would allow but which nothing here needs yet (migration takes private
 * anonymous memory only).  A mapping the program registered on its own
 * userfaultfd is not watched either (the kernel answers EBUSY).
 *
 * Late invalidations.  UNMAP and REMAP are raised after the change, REMOVE
 * before the zap, but the zap goes on as soon as the event is read; the
 * invalidation (start and end back to back) comes after that, from the
 * dispatcher thread.  So a driver must not assume its entries were dropped
 * before the pages went: it must only touch memory through its mirror with
 * accesses that cannot crash (hmm_mirror_read/write use process_vm_readv
 * and process_vm_writev on system memory and turn EFAULT into a device
 * fault).  What is promised: once the system call has returned, a range
 * fault, a migration or a mirror access that starts afterwards
 * (hmm_range_fault, hmm_migrate_vma_setup, hmm_mirror_read/write) waits
 * until the invalidation has ended, so it never sees the old mapping.
 *
 * Threads and locks.  cpufault.c's reader reads every message; it hands
 * events to event() here, which only queues them on a fixed ring under
 * src.lock (a leaf held for a few instructions): the reader never waits
 * for anything a thread sleeping in an event might hold, and never
 * allocates.  The dispatcher takes ranges off the ring and invalidates
 * them; its callbacks may sleep on driver locks or free memory (raising
 * events that the reader still reads).  When the ring is full, what does
 * not fit is merged into one range invalidated as HMM_NOTIFY_UNMAP: too
 * much is invalidated, nothing is missed, the reader never waits.
 *
 *   lock order: cpufault's read_lock -> src.lock (leaf)
 *   the reader:     read_lock, then src.lock in event()
 *   the dispatcher: src.lock alone; callbacks with no lock of ours held;
 *                   kicks the fault server with no lock held
 *   sync():         read_lock (taken and dropped), then src.lock
 *   the server:     src.lock alone, in pending()
 *
 * Double reports.  A change made through an interposed wrapper, or by
 * migrate.c, is bracketed by its maker before the change; the maker
 * announces it (hmm__cpufault_own_begin) and the reader drops its event.
 * A raw change of the very same range made by another thread at the same
 * moment is dropped with it; the wrapper's invalidation covered it.
 *
 * fork.  The reader closes the child's userfaultfd (cpufault.c): the child
 * has no registration and no subscription.  The fork() wrapper evicts
 * device pages first; a raw fork cannot be prepared, and a child reads
 * zeros where the parent's anonymous pages were on a device.  A child of a
 * raw fork does not run libhmm's fork handlers either, so it should exec or
 * exit without using libhmm.
 *
 * Device kernels (launch.c) reach system memory through their TLBs with
 * plain loads and stores: a kernel touching memory that another thread
 * unmaps with a raw system call can crash, as a CPU thread would; only
 * hmm_mirror_read/write are made safe (mirror.c).  And a mapping watched
 * here cannot be registered by the program on a userfaultfd of its own
 * (the kernel answers EBUSY), as with migrated memory.
 *
 * Device-resident anonymous pages (migrate.c) that a raw munmap, mremap or
 * MADV_DONTNEED takes are freed by the invalidation (an mremap'd range does
 * not take its device pages along: the wrapper evicts them first, a raw
 * mremap loses them).  A CPU fault on a page inside a change read but not
 * yet invalidated is kept by the fault server until the dispatcher has
 * invalidated it (source_pending, then hmm__cpufault_kick), so that a page
 * a raw MADV_DONTNEED took from a device reads zeros, as it should, rather
 * than coming back.
 */
#define _GNU_SOURCE
#include "config.h"
#include "hmm-internal.h"
#include "pagetable.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>

#define RING_SIZE 1024 /* ranges; power of two */
#define WATCHED 16     /* registered mappings remembered */

/*
 * Invariant: head <= tail <= head + RING_SIZE; every range handed to
 * event() is in the ring, merged into over, or dispatched:
 * queued == dispatched + (tail - head) + over_count.
 */
static struct {
	pthread_mutex_t lock;       /* everything below; a leaf */
	pthread_cond_t nonempty;    /* for the dispatcher */
	pthread_cond_t progress;    /* for sync() */
	struct hmm_notifier_range ring[RING_SIZE];
	uint64_t head, tail;
	bool overflow;
	struct hmm_notifier_range over;
	uint64_t over_count;        /* ranges merged into over */
	uint64_t queued, dispatched;
	struct hmm_notifier_range current; /* being dispatched, if dispatching */
	bool dispatching;
	bool kick;                  /* pending() kept a fault: kick the server */
	bool running;               /* the dispatcher exists */
	pthread_t dispatcher;
	pthread_once_t atfork_once;
	struct { uint64_t start, end; } watched[WATCHED]; /* registered mappings */
	unsigned nwatched, next_watched;
	uint64_t unmaps;            /* UNMAP and REMAP events read */
} src = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.nonempty = PTHREAD_COND_INITIALIZER,
	.progress = PTHREAD_COND_INITIALIZER,
	.atfork_once = PTHREAD_ONCE_INIT,
};

static HMM_THREAD_LOCAL bool on_dispatcher;

/* Context: src.lock held.  Never waits. */
static void queue_locked(uint64_t start, uint64_t end, enum hmm_notify_event event)
{
	src.queued++;
	if (src.tail - src.head < RING_SIZE && !src.overflow) {
		src.ring[src.tail++ % RING_SIZE] =
			(struct hmm_notifier_range){ start, end, event, NULL };
		return;
	}
	/* Once set, later ranges merge too, so that no invalidation overtakes
	 * an earlier one. */
	if (!src.overflow) {
		src.over = (struct hmm_notifier_range){ start, end, HMM_NOTIFY_UNMAP, NULL };
		src.overflow = true;
	} else {
		if (start < src.over.start)
			src.over.start = start;
		if (end > src.over.end)
			src.over.end = end;
	}
	src.over_count++;
}

static void source_event(uint8_t kind, uint64_t start, uint64_t end)
{
	enum hmm_notify_event event;

	switch (kind) {
	case UFFD_EVENT_UNMAP:
	case UFFD_EVENT_REMAP:
		event = HMM_NOTIFY_UNMAP;
		break;
	case UFFD_EVENT_REMOVE:
		event = HMM_NOTIFY_CLEAR;
		break;
	case UFFD_EVENT_FORK:
		event = HMM_NOTIFY_PROTECTION_PAGE;
		break;
	default:
		return;
	}
	pthread_mutex_lock(&src.lock);
	queue_locked(start, end, event);
	pthread_mutex_unlock(&src.lock);
	pthread_cond_signal(&src.nonempty);
}

static void source_unmapped(void)
{
	pthread_mutex_lock(&src.lock);
	src.nwatched = 0;
	src.unmaps++;
	pthread_mutex_unlock(&src.lock);
}

static void *dispatcher_main(void *arg)
{
	void *stack = hmm__own_stack_begin(); /* not for a migration to take */
	(void)arg;
	on_dispatcher = true;
	pthread_mutex_lock(&src.lock);
	for (;;) {
		struct hmm_notifier_range r;
		uint64_t count;

		if (src.head != src.tail) {
			r = src.ring[src.head++ % RING_SIZE];
			count = 1;
		} else if (src.overflow) {
			r = src.over;
			count = src.over_count;
			src.overflow = false;
			src.over_count = 0;
		} else {
			pthread_cond_wait(&src.nonempty, &src.lock);
			continue;
		}
		src.current = r;
		src.dispatching = true;
		pthread_mutex_unlock(&src.lock);
		/* Too late to come before the change: callbacks drop the
		 * devices' entries now, and read_begin waits for the end. */
		hmm__invalidate_start(&r);
		hmm__invalidate_end(&r);
		pthread_mutex_lock(&src.lock);
		src.dispatching = false;
		src.dispatched += count;
		pthread_cond_broadcast(&src.progress);
		if (src.kick) {
			/* CPU faults kept for a pending range may go on. */
			src.kick = false;
			pthread_mutex_unlock(&src.lock);
			hmm__cpufault_kick();
			pthread_mutex_lock(&src.lock);
		}
	}
	hmm__own_stack_end(stack);
	return NULL;
}

/* In a child after fork(): no dispatcher, nothing to dispatch (cpufault.c
 * starts again from nothing, and starts us with it). */
static void forget_in_child(void)
{
	pthread_mutex_init(&src.lock, NULL);
	pthread_cond_init(&src.nonempty, NULL);
	pthread_cond_init(&src.progress, NULL);
	src.head = src.tail = src.queued = src.dispatched = src.over_count = 0;
	src.overflow = src.dispatching = src.kick = false;
	src.running = false;
	src.nwatched = 0; /* the child's userfaultfd is closed: none is registered */
}

static void install_atfork(void)
{
	pthread_atfork(NULL, NULL, forget_in_child);
}

/* Context: cpufault's start lock held, so never twice at once. */
static int source_start(void)
{
	int err;

	pthread_once(&src.atfork_once, install_atfork);
	if (src.running)
		return 0;
	err = -pthread_create(&src.dispatcher, NULL, dispatcher_main, NULL);
	if (err)
		return err;
	src.running = true;
	return 0;
}

static void source_watch(uint64_t start, uint64_t end)
{
	if (!hmm__cpufault_events() && (hmm__cpufault_start() || !hmm__cpufault_events()))
		return;
	bool known = false;
	uint64_t unmaps;

	pthread_mutex_lock(&src.lock);
	for (unsigned i = 0; i < src.nwatched && !known; i++)
		known = src.watched[i].start <= start && end <= src.watched[i].end;
	unmaps = src.unmaps;
	pthread_mutex_unlock(&src.lock);
	if (known)
		return;
	/* -EINVAL, -EBUSY: not ours to watch (see the top); nothing to do. */
	if (hmm__cpufault_watch(start, end))
		return;
	pthread_mutex_lock(&src.lock);
	if (src.unmaps == unmaps) {
		unsigned i = src.nwatched < WATCHED ? src.nwatched++ : src.next_watched++ % WATCHED;

		src.watched[i].start = start;
		src.watched[i].end = end;
	}
	pthread_mutex_unlock(&src.lock);
}

static void source_sync(void)
{
	uint64_t target;

	/* The dispatcher's own callbacks, and the fault server (which the
	 * dispatcher's callbacks may wait for), must not wait for it. */
	if (on_dispatcher || hmm__cpufault_on_server() || !hmm__cpufault_events())
		return;
	/* A message read before we came is handed on once read_lock is free. */
	hmm__cpufault_read_barrier();
	pthread_mutex_lock(&src.lock);
	target = src.queued;
	while (src.dispatched < target)
		pthread_cond_wait(&src.progress, &src.lock);
	pthread_mutex_unlock(&src.lock);
}

/*
 * Is va in r, a clear?  Only a clear leaves a mapping whose pages fault to
 * us (an unmapped range has none, and a new mapping there is not
 * registered); and holding faults for a fork's range, the whole address
 * space, could hold one the dispatcher itself takes.
 */
static bool in(const struct hmm_notifier_range *r, uint64_t va)
{
	return r->event == HMM_NOTIFY_CLEAR && r->start <= va && va < r->end;
}

static bool source_pending(uint64_t va)
{
	bool hit;

	pthread_mutex_lock(&src.lock);
	/* The overflow range is an unmap: clears merged into it lose their
	 * faults' wait, as they lose their exact range. */
	hit = src.dispatching && in(&src.current, va);
	for (uint64_t i = src.head; i != src.tail && !hit; i++)
		hit = in(&src.ring[i % RING_SIZE], va);
	/* Under the lock: the dispatch that ends the range sees it. */
	src.kick |= hit;
	pthread_mutex_unlock(&src.lock);
	return hit;
}

static const struct hmm__uffd_source source = {
	.features = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
		    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_FORK,
	.required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
		    UFFD_FEATURE_EVENT_REMOVE,
	.start = source_start,
	.event = source_event,
	.unmapped = source_unmapped,
	.watch = source_watch,
	.sync = source_sync,
	.pending = source_pending,
};

/* Loading libhmm.so turns the source on; it starts with the first watch. */
__attribute__((constructor)) static void source_install(void)
{
	if (!getenv("HMM_NO_UFFD_EVENTS"))
		__atomic_store_n(&hmm__uffd_source, &source, __ATOMIC_RELEASE);
}
