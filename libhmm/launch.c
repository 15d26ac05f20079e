/* SPDX-License-Identifier: MIT */
/*
 * Device kernels: a C function run on a device's compute units, whose
 * loads and stores go through each unit's TLB and the mirror's page table.
 *
 * The compute units are threads started by a mirror's first launch and kept
 * until the mirror goes.  A launch hands out work items in order from an
 * atomic counter, a few at a time; each unit takes the next ones when it
 * has run its own.  A
 * failed access stops the launch: no item starts after it, and hmm_launch
 * returns the first error.
 *
 * The fast path of an access is the TLB lookup and the copy: the unit
 * announced the TLB generation it works under when it started on the launch
 * (cu->in_access, see mirror.h), so each access only compares the mirror's
 * generation with it, a plain load.  An invalidation therefore waits until
 * every unit has made its next access (or finished its items), which is
 * soon for any kernel that touches memory.  When they differ (an invalidation
 * happened), the unit announces the new one; before anything that can wait
 * for an invalidation (the driver lock, a device fault) it withdraws its
 * announcement, so an invalidation never waits for a unit that waits for it.
 */
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Pages a kernel's device fault maps, starting at the faulting one: a
 * kernel usually walks on, and a round for 1 MiB costs little more than one
 * for a page (the first launch of bench_kernel runs 2.5x faster than with
 * 16).  Writes fault fewer: a write fault makes pages writable, which
 * allocates memory (and breaks copy-on-write) the program may never touch.
 * A bad page further on makes the round fall back to the one page.
 * A unit whose write faults stream on, each at the end of what the last one
 * mapped, doubles its write window up to FAULT_AHEAD_WRITE_MAX, as
 * read-ahead ramps up: it is writing the memory in order and will touch what
 * it maps.  (Device first touch of 1 GiB with 2 units: 16 pages per fault
 * cost 3 times the CPU's own first touch, most of it the fixed cost of a
 * fault round.)
 */
#define FAULT_AHEAD_READ 256
#define FAULT_AHEAD_WRITE 16
#define FAULT_AHEAD_WRITE_MAX 512

/* Pages a write fault of the unit at va maps, and what it expects next. */
static uint64_t write_ahead(struct hmm__cu *cu, uint64_t va, size_t page_size)
{
	uint64_t page = va & ~(uint64_t)(page_size - 1);
	uint64_t ahead = FAULT_AHEAD_WRITE;

	if (page == cu->write_next && cu->write_ahead) {
		ahead = cu->write_ahead * 2;
		if (ahead > FAULT_AHEAD_WRITE_MAX)
			ahead = FAULT_AHEAD_WRITE_MAX;
	}
	cu->write_ahead = ahead;
	cu->write_next = page + ahead * page_size;
	return ahead;
}

struct hmm__launch {
	pthread_mutex_t lock;   /* one launch at a time */
	pthread_mutex_t state;  /* the fields below, and the units' hand-off */
	pthread_cond_t go, done;
	uint64_t epoch;         /* bumped per launch */
	bool stop;
	hmm_kernel_fn fn;
	void *arg;
	uint64_t nitems;
	uint64_t grab;          /* items a unit takes at a time */
	uint64_t next;          /* atomic: next item to hand out */
	int err;                /* atomic: the first access error */
	unsigned running;       /* units still in this launch */
};

struct hmm_kernel {
	struct hmm__cu *cu;
	struct hmm__launch *l;
	uint64_t item;
};

/* The unit the calling thread is, if it is one: launches from kernels deadlock. */
static HMM_THREAD_LOCAL struct hmm__cu *current_cu;

static void announce(struct hmm__cu *cu, const struct hmm_mirror *m)
{
	for (;;) {
		uint64_t g = __atomic_load_n(&m->tlb_gen, __ATOMIC_SEQ_CST);

		__atomic_store_n(&cu->in_access, g, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&m->tlb_gen, __ATOMIC_SEQ_CST) == g)
			return;
	}
}

static void withdraw(struct hmm__cu *cu)
{
	__atomic_store_n(&cu->in_access, 0, __ATOMIC_RELEASE);
}

void hmm__launch_quiesce_self(void)
{
	if (current_cu)
		withdraw(current_cu);
}

static void *cu_main(void *arg)
{
	void *stack = hmm__own_stack_begin(); /* not for a migration to take */
	struct hmm__cu *cu = arg;
	struct hmm__launch *l = cu->mirror->launch;
	uint64_t seen = 0;

	current_cu = cu;
	hmm__tlb_init(&cu->tlb);
	for (;;) {
		struct hmm_kernel k = { .cu = cu, .l = l };
		hmm_kernel_fn fn;
		uint64_t nitems, grab;
		void *farg;

		pthread_mutex_lock(&l->state);
		while (l->epoch == seen && !l->stop)
			pthread_cond_wait(&l->go, &l->state);
		if (l->stop) {
			pthread_mutex_unlock(&l->state);
			break;
		}
		seen = l->epoch;
		fn = l->fn;
		farg = l->arg;
		nitems = l->nitems;
		grab = l->grab;
		pthread_mutex_unlock(&l->state);

		cu->k = &k;
		/* Announced for the whole run; see the top of the file. */
		announce(cu, cu->mirror);
		while (!__atomic_load_n(&l->err, __ATOMIC_RELAXED)) {
			uint64_t i = __atomic_fetch_add(&l->next, grab, __ATOMIC_RELAXED), end;

			if (i >= nitems)
				break;
			end = nitems - i < grab ? nitems : i + grab;
			for (; i < end && !__atomic_load_n(&l->err, __ATOMIC_RELAXED); i++) {
				k.item = i;
				fn(&k, farg);
			}
		}
		withdraw(cu);
		cu->k = NULL;

		pthread_mutex_lock(&l->state);
		if (--l->running == 0)
			pthread_cond_signal(&l->done);
		pthread_mutex_unlock(&l->state);
	}
	hmm__own_stack_end(stack);
	return NULL;
}

/* Start m's compute units.  Context: m->dev->lock held. */
static int start_units(struct hmm_mirror *m)
{
	unsigned n = m->dev->compute_units, started = 0;
	struct hmm__launch *l = hmm__calloc(1, sizeof(*l));
	/* Aligned as the type says: no unit shares a cache line with another. */
	struct hmm__cu *cus = hmm__aligned_alloc(_Alignof(struct hmm__cu), n * sizeof(*cus));
	int err = 0;

	if (!l || !cus) {
		hmm__free(l);
		hmm__free(cus);
		return -ENOMEM;
	}
	memset(cus, 0, n * sizeof(*cus));
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->state, NULL);
	pthread_cond_init(&l->go, NULL);
	pthread_cond_init(&l->done, NULL);
	m->launch = l;
	for (; started < n; started++) {
		cus[started].mirror = m;
		cus[started].index = started;
		err = -pthread_create(&cus[started].thread, NULL, cu_main, &cus[started]);
		if (err)
			break;
	}
	if (err) {
		pthread_mutex_lock(&l->state);
		l->stop = true;
		pthread_cond_broadcast(&l->go);
		pthread_mutex_unlock(&l->state);
		while (started--)
			pthread_join(cus[started].thread, NULL);
		hmm__free(cus);
		hmm__free(l);
		m->launch = NULL;
		return err;
	}
	m->cus = cus;
	/* The invalidate callback reads cus[] once it sees ncus. */
	__atomic_store_n(&m->ncus, n, __ATOMIC_RELEASE);
	return 0;
}

void hmm__launch_forget(struct hmm_mirror *m)
{
	hmm__free(m->cus);
	hmm__free(m->launch);
	m->cus = NULL;
	m->launch = NULL;
	m->ncus = 0;
}

void hmm__launch_stop(struct hmm_mirror *m)
{
	struct hmm__launch *l = m->launch;
	unsigned n = __atomic_load_n(&m->ncus, __ATOMIC_ACQUIRE);

	if (!l)
		return;
	pthread_mutex_lock(&l->state);
	l->stop = true;
	pthread_cond_broadcast(&l->go);
	pthread_mutex_unlock(&l->state);
	for (unsigned i = 0; i < n; i++)
		pthread_join(m->cus[i].thread, NULL);
	/* The notifier is still subscribed: a callback must no longer look at
	 * the units.  (It takes m->lock, so taking it orders this.) */
	pthread_mutex_lock(&m->lock);
	__atomic_store_n(&m->ncus, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&m->lock);
	hmm__free(m->cus);
	m->cus = NULL;
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->state);
	pthread_cond_destroy(&l->go);
	pthread_cond_destroy(&l->done);
	hmm__free(l);
	m->launch = NULL;
}

HMM_EXPORT int hmm_launch(struct hmm_mirror *m, uint64_t nitems, hmm_kernel_fn fn, void *arg)
{
	struct hmm__launch *l;
	uint64_t hits = 0, misses = 0;
	unsigned n;
	int err = 0;

	if (!m || !fn)
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	if (current_cu)
		return -EDEADLK;
	pthread_mutex_lock(&m->dev->lock);
	if (!m->launch)
		err = start_units(m);
	pthread_mutex_unlock(&m->dev->lock);
	if (err)
		return err;
	l = m->launch;
	n = __atomic_load_n(&m->ncus, __ATOMIC_ACQUIRE);

	pthread_mutex_lock(&l->lock);
	pthread_mutex_lock(&l->state);
	l->fn = fn;
	l->arg = arg;
	l->nitems = nitems;
	/* Enough per grab that units do not fight over the counter, few enough
	 * that they finish together: about 16 grabs per unit, at most 1024. */
	l->grab = nitems / (16 * (uint64_t)n);
	l->grab = l->grab < 1 ? 1 : l->grab > 1024 ? 1024 : l->grab;
	l->next = 0;
	l->err = 0;
	l->running = n;
	l->epoch++;
	pthread_cond_broadcast(&l->go);
	while (l->running)
		pthread_cond_wait(&l->done, &l->state);
	err = l->err;
	/* The units wait for the next epoch: their TLB counters are ours to read. */
	for (unsigned i = 0; i < n; i++) {
		hits += m->cus[i].tlb.hits;
		misses += m->cus[i].tlb.misses;
		m->cus[i].tlb.hits = m->cus[i].tlb.misses = 0;
	}
	pthread_mutex_unlock(&l->state);
	pthread_mutex_lock(&m->lock);
	m->stats.launches++;
	m->stats.tlb_hits += hits;
	m->stats.tlb_misses += misses;
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&l->lock);
	return err;
}

HMM_EXPORT uint64_t hmm_kernel_item(const struct hmm_kernel *k)
{
	return k->item;
}

HMM_EXPORT unsigned int hmm_kernel_unit(const struct hmm_kernel *k)
{
	return k->cu->index;
}

HMM_EXPORT bool hmm_kernel_failed(const struct hmm_kernel *k)
{
	return __atomic_load_n(&k->l->err, __ATOMIC_RELAXED) != 0;
}

/* The miss path: the page table under the driver lock, then a device fault. */
static int slow_path(struct hmm__cu *cu, uint64_t va, bool write)
{
	struct hmm_mirror *m = cu->mirror;
	unsigned order = 0;
	uint64_t pte;

	withdraw(cu);
	pthread_mutex_lock(&m->lock);
	pte = m->pt_ops->lookup(m->pt, va, &order);
	if (pte && (!write || (pte & HMM__PTE_WRITE)))
		hmm__tlb_fill(&cu->tlb, va, pte, order);
	pthread_mutex_unlock(&m->lock);
	if (!pte || (write && !(pte & HMM__PTE_WRITE))) {
		uint64_t ahead = write ? write_ahead(cu, va, m->page_size) : FAULT_AHEAD_READ;
		int err = hmm__mirror_fault(m, va, va + ahead * m->page_size, write);

		if (err) {
			int zero = 0;

			__atomic_compare_exchange_n(&cu->k->l->err, &zero, err, false,
						    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
			announce(cu, m);
			return err;
		}
	}
	announce(cu, m);
	return 0;
}

/*
 * The fast path: where va's bytes are, if the unit's TLB translates va with
 * the access wanted, else NULL.  The memory stays valid until the unit's
 * next announcement or withdrawal (see the top of the file).
 */
static inline char *fast_translate(struct hmm__cu *cu, const struct hmm_mirror *m, uint64_t va,
				   bool write)
{
	uint64_t g = __atomic_load_n(&m->tlb_gen, __ATOMIC_SEQ_CST), pte;
	unsigned order;

	if (__builtin_expect(g != __atomic_load_n(&cu->in_access, __ATOMIC_RELAXED), 0))
		announce(cu, m);
	if (__builtin_expect(!hmm__tlb_lookup(&cu->tlb, &m->tlb_gen, va, &pte, &order), 0) ||
	    (write && !(pte & HMM__PTE_WRITE)))
		return NULL;
	return (char *)(uintptr_t)(hmm__pte_addr(pte) | (va & ((HMM__PT_SIZE << order) - 1)));
}

static int kernel_access(struct hmm_kernel *k, uint64_t va, void *buf, size_t len, bool write)
{
	struct hmm__cu *cu = k->cu;
	struct hmm_mirror *m = cu->mirror;
	uint64_t mask = m->page_size - 1;
	int err = __atomic_load_n(&k->l->err, __ATOMIC_RELAXED);

	while (!err && len) {
		size_t chunk = (size_t)(((va & ~mask) + m->page_size) - va);
		char *mem;

		if (chunk > len)
			chunk = len;
		mem = fast_translate(cu, m, va, write);
		if (__builtin_expect(mem != NULL, 1)) {
			HMM_TSAN_IGNORE_BEGIN(); /* the device's access */
			if (write)
				memcpy(mem, buf, chunk);
			else
				memcpy(buf, mem, chunk);
			HMM_TSAN_IGNORE_END();
			buf = (char *)buf + chunk;
			va += chunk;
			len -= chunk;
			continue;
		}
		err = slow_path(cu, va, write);
	}
	if (err && !write)
		memset(buf, 0, len);
	return err;
}

/*
 * Translate one span under the unit's current announcement: 1 if it was
 * announced anew or a page needed the slow path (start again), 0 with
 * span->addr set, or a negative errno.
 */
static int map_span(struct hmm_kernel *k, struct hmm_kernel_span *span, uint64_t gen)
{
	struct hmm__cu *cu = k->cu;
	struct hmm_mirror *m = cu->mirror;
	uint64_t va = (uint64_t)(uintptr_t)span->ptr, end = va + span->len;
	uint64_t mask = m->page_size - 1;
	char *first = NULL;

	if (!span->len || end < va || end > HMM__VA_LIMIT)
		return -EINVAL;
	for (uint64_t at = va; at < end; at = (at & ~mask) + m->page_size) {
		char *mem = fast_translate(cu, m, at, span->write);

		if (__atomic_load_n(&cu->in_access, __ATOMIC_RELAXED) != gen)
			return 1;
		if (!mem) {
			int err = slow_path(cu, at, span->write);

			return err ? err : 1;
		}
		if (!first)
			first = mem;
		else if (mem != first + (at - va))
			return -ERANGE;
	}
	span->addr = first;
	return 0;
}

HMM_EXPORT int hmm_kernel_map(struct hmm_kernel *k, struct hmm_kernel_span *spans, unsigned n)
{
	struct hmm__cu *cu = k->cu;

	if (!spans && n)
		return -EINVAL;
	for (;;) {
		int err = __atomic_load_n(&k->l->err, __ATOMIC_RELAXED);
		uint64_t gen;
		unsigned i;

		if (err)
			return err;
		/* All spans under one announced generation: a fault for one may
		 * invalidate another, and then every span is translated again. */
		if (__atomic_load_n(&cu->mirror->tlb_gen, __ATOMIC_SEQ_CST) !=
		    __atomic_load_n(&cu->in_access, __ATOMIC_RELAXED))
			announce(cu, cu->mirror);
		gen = __atomic_load_n(&cu->in_access, __ATOMIC_RELAXED);
		for (i = 0; i < n; i++) {
			err = map_span(k, &spans[i], gen);
			if (err)
				break;
		}
		if (err == 1)
			continue;
		return err;
	}
}

HMM_EXPORT int hmm_kernel_read(struct hmm_kernel *k, const void *ptr, void *buf, size_t len)
{
	return kernel_access(k, (uint64_t)(uintptr_t)ptr, buf, len, false);
}

HMM_EXPORT int hmm_kernel_write(struct hmm_kernel *k, void *ptr, const void *buf, size_t len)
{
	return kernel_access(k, (uint64_t)(uintptr_t)ptr, (void *)buf, len, true);
}

/*
 * Typed accesses: one translation and a plain load or store on a hit; the
 * general path otherwise (and after an error, which makes loads read 0).
 */
#define TYPED(name, type)                                                          \
	HMM_EXPORT type hmm_ld_##name(struct hmm_kernel *k, const type *p)         \
	{                                                                          \
		char *mem;                                                         \
		type v;                                                            \
                                                                                   \
		if (__builtin_expect(!__atomic_load_n(&k->l->err, __ATOMIC_RELAXED), 1) && \
		    (mem = fast_translate(k->cu, k->cu->mirror, (uint64_t)(uintptr_t)p, \
					  false))) {                               \
			HMM_TSAN_IGNORE_BEGIN(); /* the device's access */        \
			v = *(const type *)mem;                                    \
			HMM_TSAN_IGNORE_END();                                     \
			return v;                                                  \
		}                                                                  \
		kernel_access(k, (uint64_t)(uintptr_t)p, &v, sizeof(v), false);   \
		return v;                                                          \
	}                                                                          \
	HMM_EXPORT void hmm_st_##name(struct hmm_kernel *k, type *p, type v)       \
	{                                                                          \
		char *mem;                                                         \
                                                                                   \
		if (__builtin_expect(!__atomic_load_n(&k->l->err, __ATOMIC_RELAXED), 1) && \
		    (mem = fast_translate(k->cu, k->cu->mirror, (uint64_t)(uintptr_t)p, \
					  true))) {                                \
			HMM_TSAN_IGNORE_BEGIN(); /* the device's access */        \
			*(type *)mem = v;                                          \
			HMM_TSAN_IGNORE_END();                                     \
			return;                                                    \
		}                                                                  \
		kernel_access(k, (uint64_t)(uintptr_t)p, &v, sizeof(v), true);     \
	}

TYPED(f64, double)
TYPED(f32, float)
TYPED(u64, uint64_t)
TYPED(u32, uint32_t)
