/* SPDX-License-Identifier: MIT */
/*
 * DMA engines: one copy thread per engine, each serving its own queue.
 *
 * A submission is cut into at most one job per engine.  The bytes of the
 * batch are divided into contiguous shares of about equal size (a copy that
 * straddles a share boundary is split, at a page multiple of its own offset
 * where it can be), and share s goes to engine (first + s) % nengines, where
 * first rotates from one submission to the next so that small submissions
 * from many threads spread over the engines too.  A batch smaller than
 * two MIN_SHARE goes to one engine whole: waking a thread on another CPU
 * costs about as much as copying that much memory.
 *
 * Fences count jobs, not descriptors: a submission adds the number of jobs
 * it queued before queuing any, and each engine takes one off when it has
 * finished a job.  The fence is caller-allocated and may be destroyed as soon
 * as a waiter sees pending == 0, so an engine touches neither the fence nor
 * the job after its final unlock of the fence.
 *
 * Throttling models time on CLOCK_MONOTONIC with absolute deadlines.  A
 * piece of n bytes started at t0 may not finish before
 * t0 + latency_ns + n * 1e9 / bw.  Under a bandwidth limit a piece is copied
 * in slices and each slice waits for its own deadline, so the bytes arrive
 * at a steady rate instead of in one burst followed by a long sleep; since
 * deadlines are absolute, the time spent copying is never slept again and
 * an oversleep in one slice is made up by the next.
 *
 * With a NUMA node, the engine threads are created bound to that node's CPUs;
 * a node without CPUs (a memory-only node, as CXL memory appears) leaves them
 * unbound.
 *
 * Locking.  The header lists the fence lock and the queue locks as leaves,
 * so this file never holds two locks at once: a submitter takes the fence
 * lock, drops it, then takes each queue lock in turn; an engine takes its
 * queue lock to dequeue a job and to publish its counters, drops it, and
 * only then takes the job's fence lock.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <numa.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define DMA_MAX_ENGINES 64
/* The smallest share of a batch worth handing to another engine. */
#define MIN_SHARE (256u << 10)
/*
 * An unthrottled batch this small (a READ's readahead window of pages coming
 * back from a device, at most) is copied by the submitting thread, and
 * accounted to an engine as if it had copied it: waking an engine thread on
 * another CPU costs ~50 us, a hundred times the copy of a 4 KiB page, and a
 * CPU fault that brings one page back from a device would pay it twice.
 * With throttling the engines always copy, since they model the link.
 */
#define INLINE_MAX (1u << 20)
/* Shares are cut at multiples of this, so pages are not torn between engines. */
#define SHARE_ALIGN 4096u
/* Bounds on the slice a throttled engine copies between two deadlines. */
#define SLICE_MIN (64u << 10)
#define SLICE_MAX (1u << 20)
#define NSEC_PER_SEC 1000000000ull

/* A contiguous part of one copy descriptor. */
struct seg {
	void *dst;
	const void *src;
	size_t len;
	bool last; /* holds the descriptor's last byte: completes the descriptor */
};

/* One engine's share of one submission. */
struct job {
	struct job *next;         /* in the engine's queue */
	struct hmm__fence *fence;
	size_t nseg;
	struct seg seg[];
};

struct engine {
	struct hmm__dma *dma;
	unsigned index;
	pthread_t thread;

	pthread_mutex_t lock;
	pthread_cond_t wake;      /* signalled when a job is queued or stop is set */
	struct job *head;         /* protected by lock */
	struct job **tail;        /* protected by lock */
	bool stop;                /* protected by lock: exit once the queue is empty */
	uint64_t copies;          /* protected by lock */
	uint64_t bytes;           /* protected by lock */
	uint64_t busy_ns;         /* protected by lock */
} __attribute__((aligned(64))); /* engines touch only their own cache lines */

struct hmm__dma {
	unsigned nengines;
	uint64_t bw;              /* bytes per second per engine, 0: unlimited */
	uint64_t latency_ns;
	int numa_node;
	size_t slice;             /* bytes per paced slice when bw != 0 */
	unsigned next;            /* first engine of the next submission; atomic */
	struct engine eng[];
};

/* ------------------------------------------------------------------ fences */

void hmm__fence_init(struct hmm__fence *f)
{
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->done, NULL);
	f->pending = 0;
}

/*
 * hmm__fence_wait() - block until every job submitted against @f is done.
 * Context: takes f->lock; may sleep.
 */
void hmm__fence_wait(struct hmm__fence *f)
{
	pthread_mutex_lock(&f->lock);
	while (f->pending)
		pthread_cond_wait(&f->done, &f->lock);
	pthread_mutex_unlock(&f->lock);
}

/*
 * hmm__fence_done() - poll @f.
 * Context: takes f->lock.
 * Return: true if nothing submitted against @f is still outstanding.
 */
bool hmm__fence_done(struct hmm__fence *f)
{
	bool done;

	pthread_mutex_lock(&f->lock);
	done = f->pending == 0;
	pthread_mutex_unlock(&f->lock);
	return done;
}

void hmm__fence_destroy(struct hmm__fence *f)
{
	HMM_ASSERT(hmm__fence_done(f));
	pthread_cond_destroy(&f->done);
	pthread_mutex_destroy(&f->lock);
}

static void fence_get(struct hmm__fence *f, uint64_t n)
{
	pthread_mutex_lock(&f->lock);
	f->pending += n;
	pthread_mutex_unlock(&f->lock);
}

/*
 * Retire one job.  The broadcast happens under the lock so that a waiter,
 * which needs the lock to see pending == 0, cannot destroy the fence before
 * we are done with it.
 */
static void fence_put(struct hmm__fence *f)
{
	pthread_mutex_lock(&f->lock);
	HMM_ASSERT(f->pending > 0);
	if (--f->pending == 0)
		pthread_cond_broadcast(&f->done);
	pthread_mutex_unlock(&f->lock);
}

/* ------------------------------------------------------------------ engines */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / NSEC_PER_SEC),
		.tv_nsec = (long)(deadline % NSEC_PER_SEC),
	};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* Nanoseconds needed to move n bytes at bw bytes per second, rounded up. */
static uint64_t transfer_ns(uint64_t n, uint64_t bw)
{
	unsigned __int128 t = (unsigned __int128)n * NSEC_PER_SEC + bw - 1;

	t /= bw;
	return t > UINT64_MAX ? UINT64_MAX : (uint64_t)t;
}

/*
 * Run one job as the throttled engine would.  A job is one transfer: it
 * pays latency_ns once, then its bytes flow at bw.  Deadlines are computed
 * from the job's start and the bytes copied so far, never from the time a
 * sleep ended, so oversleeping in one slice is made up in the next; the
 * engine sleeps once per slice of data, not per segment.
 * Return: the time at which the engine is free again.
 */
static uint64_t copy_throttled(const struct hmm__dma *dma, const struct job *job, uint64_t t0)
{
	uint64_t base = t0 + dma->latency_ns, done = 0, unpaced = 0;

	for (size_t i = 0; i < job->nseg; i++) {
		const struct seg *s = &job->seg[i];
		size_t off = 0;

		while (off < s->len) {
			size_t n = s->len - off;

			if (dma->bw && n > dma->slice - unpaced)
				n = dma->slice - unpaced;
			HMM_TSAN_IGNORE_BEGIN(); /* DMA */
			memcpy((char *)s->dst + off, (const char *)s->src + off, n);
			HMM_TSAN_IGNORE_END();
			off += n;
			done += n;
			unpaced += n;
			if (dma->bw && unpaced >= dma->slice) {
				uint64_t deadline = base + transfer_ns(done, dma->bw);
				if (deadline > now_ns())
					sleep_until(deadline);
				unpaced = 0;
			}
		}
	}
	/* The end of the transfer, which also covers the latency of an empty one. */
	{
		uint64_t deadline = base + (dma->bw ? transfer_ns(done, dma->bw) : 0);
		if (deadline > now_ns())
			sleep_until(deadline);
	}
	return now_ns();
}

/* Count work done on (or on behalf of) engine e. */
static void account(struct engine *e, uint64_t copies, uint64_t bytes, uint64_t ns)
{
	pthread_mutex_lock(&e->lock);
	e->copies += copies;
	e->bytes += bytes;
	e->busy_ns += ns;
	pthread_mutex_unlock(&e->lock);
}

static void run_job(struct engine *e, const struct job *job)
{
	const struct hmm__dma *dma = e->dma;
	uint64_t start = now_ns(), t, copies = 0, bytes = 0;

	for (size_t i = 0; i < job->nseg; i++) {
		copies += job->seg[i].last;
		bytes += job->seg[i].len;
	}
	if (dma->bw || dma->latency_ns) {
		t = copy_throttled(dma, job, start);
	} else {
		HMM_TSAN_IGNORE_BEGIN(); /* DMA */
		for (size_t i = 0; i < job->nseg; i++)
			if (job->seg[i].len)
				memcpy(job->seg[i].dst, job->seg[i].src, job->seg[i].len);
		HMM_TSAN_IGNORE_END();
		t = now_ns();
	}

	account(e, copies, bytes, t - start);
}

static void *engine_main(void *arg)
{
	void *stack = hmm__own_stack_begin(); /* not for a migration to take */
	struct engine *e = arg;
	char name[16];

	snprintf(name, sizeof(name), "hmm-dma%u", e->index);
	pthread_setname_np(pthread_self(), name);
	/* Pacing sleeps must end when asked, not up to 50 us later. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

	for (;;) {
		struct hmm__fence *fence;
		struct job *job;

		pthread_mutex_lock(&e->lock);
		while (!e->head && !e->stop)
			pthread_cond_wait(&e->wake, &e->lock);
		job = e->head;
		if (!job) {
			pthread_mutex_unlock(&e->lock);
			break;
		}
		e->head = job->next;
		if (!e->head)
			e->tail = &e->head;
		pthread_mutex_unlock(&e->lock);

		run_job(e, job);
		fence = job->fence;
		hmm__free(job);
		fence_put(fence);
	}
	hmm__own_stack_end(stack);
	return NULL;
}

static void engine_queue(struct engine *e, struct job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&e->lock);
	*e->tail = job;
	e->tail = &job->next;
	pthread_cond_signal(&e->wake);
	pthread_mutex_unlock(&e->lock);
}

/* Drain and stop engines [0, n) and free dma. */
static void stop_engines(struct hmm__dma *dma, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct engine *e = &dma->eng[i];

		pthread_mutex_lock(&e->lock);
		e->stop = true;
		pthread_cond_signal(&e->wake);
		pthread_mutex_unlock(&e->lock);
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_join(dma->eng[i].thread, NULL);
		HMM_ASSERT(!dma->eng[i].head);
	}
	for (unsigned i = 0; i < dma->nengines; i++) {
		pthread_cond_destroy(&dma->eng[i].wake);
		pthread_mutex_destroy(&dma->eng[i].lock);
	}
	hmm__free(dma);
}

/*
 * libnuma fills its per-node CPU mask cache on first use without a lock, so
 * two threads asking at once race; all of this file's calls that reach it go
 * through numa_lock.
 */
static pthread_mutex_t numa_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * The CPUs of node, for pthread_attr_setaffinity_np.  Binding through the
 * creation attributes rather than numa_run_on_node() in each thread keeps
 * libnuma out of the engine threads.
 * Return: true if the node has CPUs; false if it has none (a memory-only
 * node, the CXL case: the engines then run anywhere) or NUMA is unsupported.
 */
static bool node_cpus(int node, cpu_set_t *set)
{
	struct bitmask *mask;
	cpu_set_t allowed;
	bool any = false;

	CPU_ZERO(set);
	if (node < 0 || numa_available() < 0)
		return false;
	/* A CPU outside our own affinity (taskset, a cpuset) would make
	 * pthread_create fail with EINVAL: leave such CPUs out. */
	if (sched_getaffinity(0, sizeof(allowed), &allowed))
		return false;
	mask = numa_allocate_cpumask();
	if (!mask)
		return false;
	pthread_mutex_lock(&numa_lock);
	if (numa_node_to_cpus(node, mask) == 0) {
		for (unsigned cpu = 0; cpu < mask->size && cpu < CPU_SETSIZE; cpu++) {
			if (numa_bitmask_isbitset(mask, cpu) && CPU_ISSET(cpu, &allowed)) {
				CPU_SET(cpu, set);
				any = true;
			}
		}
	}
	pthread_mutex_unlock(&numa_lock);
	numa_free_cpumask(mask);
	return any;
}

static bool numa_node_valid(int node)
{
	if (node == -1)
		return true;
	if (node < 0)
		return false;
	if (numa_available() < 0)
		return node == 0;
	return node <= numa_max_node() && numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node);
}

/*
 * hmm__dma_create() - start @nengines copy threads.
 * @bw: bytes per second per engine, 0 for unthrottled.
 * @latency_ns: added to every piece an engine copies, 0 for none.
 * @numa_node: node to run the engine threads on, or -1.
 * @out: the new engines.
 *
 * The threads block asynchronous signals, so that the process's signal
 * handling (a daemon's SIGINT, say) is not delivered to a copy thread.
 *
 * Context: may sleep.
 * Return: 0; -EINVAL if nengines is 0 or above 64, or numa_node is neither -1
 * nor a node of this machine; -ENOMEM; -EAGAIN if a thread could not be
 * started (nothing is left running).
 */
int hmm__dma_create(unsigned nengines, uint64_t bw, uint64_t latency_ns,
		    int numa_node, struct hmm__dma **out)
{
	size_t size = sizeof(struct hmm__dma) + nengines * sizeof(struct engine);
	pthread_attr_t attr;
	cpu_set_t cpus;
	sigset_t all, old;
	struct hmm__dma *dma;
	void *mem;
	unsigned i;
	int err = 0;

	if (nengines == 0 || nengines > DMA_MAX_ENGINES || !numa_node_valid(numa_node))
		return -EINVAL;
	mem = hmm__aligned_alloc(64, size);
	if (!mem)
		return -ENOMEM;
	dma = memset(mem, 0, size);
	dma->nengines = nengines;
	dma->bw = bw;
	dma->latency_ns = latency_ns;
	dma->numa_node = numa_node;
	/* About 4 ms worth of bytes per slice: smooth enough for a reader
	 * watching the rate, coarse enough that oversleeping is noise. */
	dma->slice = bw / 256;
	if (dma->slice < SLICE_MIN)
		dma->slice = SLICE_MIN;
	if (dma->slice > SLICE_MAX)
		dma->slice = SLICE_MAX;
	for (i = 0; i < nengines; i++) {
		struct engine *e = &dma->eng[i];

		e->dma = dma;
		e->index = i;
		e->tail = &e->head;
		pthread_mutex_init(&e->lock, NULL);
		pthread_cond_init(&e->wake, NULL);
	}

	/* Synchronous signals stay open: a fault inside memcpy must still
	 * reach its handler (userfaultfd's SIGBUS mode, for one). */
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	pthread_attr_init(&attr);
	if (node_cpus(numa_node, &cpus))
		pthread_attr_setaffinity_np(&attr, sizeof(cpus), &cpus);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < nengines; i++) {
		err = pthread_create(&dma->eng[i].thread, &attr, engine_main, &dma->eng[i]);
		if (err)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (err) {
		stop_engines(dma, i);
		return err == ENOMEM ? -ENOMEM : -EAGAIN;
	}
	*out = dma;
	return 0;
}

/*
 * hmm__dma_destroy() - finish every queued copy, then stop the threads and
 * free @dma.  Nothing may submit to @dma concurrently or afterwards; fences
 * of the queued work complete before this returns.
 * Context: takes each queue lock; sleeps until the engines are idle.
 */
void hmm__dma_destroy(struct hmm__dma *dma)
{
	if (dma)
		stop_engines(dma, dma->nengines);
}

void hmm__dma_forget(struct hmm__dma *dma)
{
	hmm__free(dma);
}

unsigned hmm__dma_engines(const struct hmm__dma *dma)
{
	return dma->nengines;
}

/*
 * hmm__dma_stats() - counters summed over the engines.  A copy split across
 * engines is counted once, by the piece holding its last byte.
 * Context: takes each queue lock in turn.
 */
void hmm__dma_stats(struct hmm__dma *dma, struct hmm__dma_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < dma->nengines; i++) {
		struct engine *e = &dma->eng[i];

		pthread_mutex_lock(&e->lock);
		st->copies += e->copies;
		st->bytes += e->bytes;
		st->busy_ns += e->busy_ns;
		pthread_mutex_unlock(&e->lock);
	}
}

/* ------------------------------------------------------------------ submission */

/*
 * Walks a batch and cuts it into shares of about target bytes.  cut_share()
 * yields the segments of one share; both passes of hmm__dma_submit (counting,
 * then filling) use the same walk, so they agree on where the cuts fall.
 */
struct cutter {
	const struct hmm__dma_copy *copies;
	size_t n;
	size_t i;       /* current descriptor */
	size_t off;     /* bytes of it already handed out */
	uint64_t target;
};

/* Fill one share; seg may be NULL to count only.  Return: segments in it. */
static size_t cut_share(struct cutter *c, bool final, struct seg *seg)
{
	uint64_t filled = 0;
	size_t nseg = 0;

	while (c->i < c->n && (final || filled < c->target || !nseg)) {
		const struct hmm__dma_copy *d = &c->copies[c->i];
		size_t take = d->len - c->off;

		if (!final && filled + take > c->target) {
			/* Cut at a page multiple of the descriptor's own offset,
			 * past the target rather than short of it, so the piece
			 * is never empty. */
			size_t want = (size_t)(c->target - filled) + c->off;

			want = (want + SHARE_ALIGN - 1) / SHARE_ALIGN * SHARE_ALIGN;
			if (want < d->len)
				take = want - c->off;
		}
		if (seg) {
			seg[nseg].dst = (char *)d->dst + c->off;
			seg[nseg].src = (const char *)d->src + c->off;
			seg[nseg].len = take;
			seg[nseg].last = c->off + take == d->len;
		}
		nseg++;
		filled += take;
		c->off += take;
		if (c->off == d->len) {
			c->i++;
			c->off = 0;
		}
	}
	return nseg;
}

/*
 * hmm__dma_submit() - queue @n copies against fence @f and return at once.
 *
 * The jobs are all allocated before any is queued, so a failure leaves
 * nothing behind.  @f's count is raised before the first job is queued: an
 * engine can finish a job the moment it is queued, and the count must not
 * touch zero while jobs of this submission are still to come.
 *
 * Context: takes f->lock, then each chosen engine's queue lock, one at a time.
 * Return: 0 (also for n == 0), -ENOMEM (nothing was queued).
 */
int hmm__dma_submit(struct hmm__dma *dma, const struct hmm__dma_copy *copies,
		    size_t n, struct hmm__fence *f)
{
	struct job *jobs[DMA_MAX_ENGINES];
	uint64_t total = 0, shares;
	struct cutter c;
	unsigned first, s;

	HMM_ASSERT(dma && f && (copies || !n));
	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++)
		total += copies[i].len;
	if (!dma->bw && !dma->latency_ns && total <= INLINE_MAX) {
		struct engine *e = &dma->eng[__atomic_fetch_add(&dma->next, 1, __ATOMIC_RELAXED) %
					      dma->nengines];
		uint64_t start = now_ns(), t;

		HMM_TSAN_IGNORE_BEGIN(); /* DMA */
		for (size_t i = 0; i < n; i++)
			memcpy(copies[i].dst, copies[i].src, copies[i].len);
		HMM_TSAN_IGNORE_END();
		t = now_ns();
		account(e, n, total, t - start);
		return 0; /* nothing pending: the fence is already complete */
	}
	shares = total / MIN_SHARE;
	if (shares > dma->nengines)
		shares = dma->nengines;
	if (shares == 0)
		shares = 1;

	c = (struct cutter){ .copies = copies, .n = n };
	c.target = (total + shares - 1) / shares;
	c.target = (c.target + SHARE_ALIGN - 1) / SHARE_ALIGN * SHARE_ALIGN;

	/* Count each share's segments, then allocate and fill its job. */
	for (s = 0; s < shares; s++) {
		struct cutter probe = c;
		bool final = s == shares - 1;
		size_t nseg = cut_share(&probe, final, NULL);

		if (!nseg)
			break; /* rounding to pages left nothing for the last shares */
		jobs[s] = hmm__malloc(sizeof(struct job) + nseg * sizeof(struct seg));
		if (!jobs[s]) {
			while (s--)
				hmm__free(jobs[s]);
			return -ENOMEM;
		}
		jobs[s]->fence = f;
		jobs[s]->nseg = cut_share(&c, final, jobs[s]->seg);
		HMM_ASSERT(jobs[s]->nseg == nseg);
	}
	shares = s;
	HMM_ASSERT(c.i == n);

	fence_get(f, shares);
	first = __atomic_fetch_add(&dma->next, 1, __ATOMIC_RELAXED);
	for (s = 0; s < shares; s++)
		engine_queue(&dma->eng[(first + s) % dma->nengines], jobs[s]);
	return 0;
}

/*
 * hmm__dma_copy_sync() - copy through the engines and wait for the result.
 * Context: may sleep.
 * Return: 0, -ENOMEM (nothing was copied).
 */
int hmm__dma_copy_sync(struct hmm__dma *dma, const struct hmm__dma_copy *copies, size_t n)
{
	struct hmm__fence f;
	int err;

	hmm__fence_init(&f);
	err = hmm__dma_submit(dma, copies, n, &f);
	if (!err)
		hmm__fence_wait(&f);
	hmm__fence_destroy(&f);
	return err;
}
