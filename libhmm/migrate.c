/* SPDX-License-Identifier: MIT */
/*
 * migrate.c - anonymous memory on devices: the three phases of migration
 * (the kernel's migrate_vma_setup/pages/finalize), the table of pages that
 * live on a device, and what happens when the CPU or an invalidation
 * reaches one of them.
 *
 * The table maps a page's virtual address to a struct anon_page:
 *
 *   state      where the data is                   the CPU page
 *   ---------  ----------------------------------  ----------------------------
 *   TO_DEVICE  CPU page, or nowhere (hole)         write-protected; taken away
 *              (after pages(): dst on the device)  (zapped) by pages()
 *   DEVICE     mem, on dev                         none: an access faults
 *   TO_RAM     mem, on dev; being copied back      none; filled by pages()
 *   EXCLUSIVE  mem, host memory that dev alone      none: an access faults and
 *              uses (for atomics)                  puts the page back
 *
 * A page not in the table is an ordinary page.  The CPU side of each state
 * is kept by cpufault.c's userfaultfd, which asks hmm__anon_cpu_fault().
 *
 * Setup collects pages, then registers them on the userfaultfd and
 * write-protects the present ones: from then on a CPU write waits and a
 * CPU read of a hole gets a write-protected zero page, so the data cannot
 * change behind the driver's copy.  Pages() marks the pages zapped and
 * throws the CPU pages away with MADV_DONTNEED (a raw system call: it is
 * ours, not an invalidation of the program's); finalize makes them DEVICE.
 * Bringing a page back is the same three phases with SELECT_DEVICE_PRIVATE,
 * pages() placing the copy with UFFDIO_COPY.
 *
 * Invalidations.  The table subscribes to the whole address space.  An
 * unmap or clear (munmap, madvise DONTNEED, ...) over a DEVICE page kills
 * it: the entry goes, and its device page is freed in hmm__anon_reap(),
 * called at the end of the invalidation, when every mirror has dropped its
 * entries for it.  Over a page being migrated it only marks it invalid:
 * the migration then drops it.  The table's own HMM_NOTIFY_MIGRATE
 * invalidations are ignored.  fork() and mremap() would lose device pages
 * (the child has no registration; a moved range loses it), so invalidate.c
 * brings them back first (hmm__anon_evict), which differs from the kernel,
 * where device-private pages are shared copy-on-write or moved.
 *
 * Lock order: invalidation callbacks (mirror->lock, ...) before anon.lock;
 * never invalidate under anon.lock.  UFFDIO_COPY and MADV_DONTNEED are done
 * under anon.lock: an invalidation of the same page then waits for them,
 * and neither needs anything an invalidation holds.
 */
#define _GNU_SOURCE
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum anon_state {
	ANON_TO_DEVICE,
	ANON_DEVICE,
	ANON_TO_RAM,
	ANON_EXCLUSIVE,
};

struct anon_page {
	struct hmm_device *dev; /* where it is, or (TO_DEVICE) where it goes */
	void *mem;              /* its device page (TO_DEVICE: once pages() ran) */
	uint8_t state;
	bool zapped;            /* TO_DEVICE: the CPU page is gone */
	bool committed;         /* pages() moved it; finalize makes it stick */
	bool invalid;           /* unmapped or cleared while moving */
	bool present;           /* TO_DEVICE: a CPU page was there (write-protected) */
	bool host;              /* mem is host memory (exclusive access), not the device's */
	const void *mig;        /* moving: the migration (its args) that owns the move */
	struct anon_page *next_dead;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t settled;          /* a page left TO_DEVICE or TO_RAM */
	struct hmm__radix pages;         /* va >> 12 -> struct anon_page */
	uint64_t count;                  /* atomic: entries, for a lockless "none" */
	struct hmm_interval_notifier *sub;
	struct anon_page *dead;          /* killed by an invalidation, to free */
} anon = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.settled = PTHREAD_COND_INITIALIZER,
};

/* Set by the cpufault monitor while it brings a page back for a CPU fault. */
static HMM_THREAD_LOCAL bool serving_cpu_fault;

static uint64_t page_size(void)
{
	return hmm__sys_page_size();
}

/* An all-zero page: the source for holes. */
static const char *zero_page(void)
{
	static char *zero;
	char *z = __atomic_load_n(&zero, __ATOMIC_ACQUIRE);

	if (!z) {
		char *none = NULL;

		/* libhmm's own: a migration must not take it. */
		z = hmm__own_mmap(NULL, page_size(), PROT_READ, 0);
		if (z == MAP_FAILED)
			return NULL;
		/* Touch it: UFFDIO_COPY reads it. */
		(void)*(volatile char *)z;
		if (!__atomic_compare_exchange_n(&zero, &none, z, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) {
			hmm__own_munmap(z, page_size()); /* another thread was first */
			z = none;
		}
	}
	return z;
}

static struct anon_page *entry(uint64_t va)
{
	return hmm__radix_lookup(&anon.pages, va / page_size());
}

static void entry_drop(uint64_t va)
{
	hmm__free(hmm__radix_delete(&anon.pages, va / page_size()));
	__atomic_sub_fetch(&anon.count, 1, __ATOMIC_RELAXED);
}

/* Is the page in the middle of a migration (faults and lookups wait)? */
static bool moving(const struct anon_page *p)
{
	return p->state == ANON_TO_DEVICE || p->state == ANON_TO_RAM;
}

/*
 * The first page at or after page index *index, up to last, in state (and
 * of device only, if set), with *index set to it; or NULL.
 * Context: anon.lock held.
 */
static struct anon_page *find_entry(uint64_t *index, uint64_t last, enum anon_state state,
				    const void *only)
{
	struct anon_page *p;

	while ((p = hmm__radix_next(&anon.pages, index)) && *index <= last) {
		if (p->state == state && (!only || p->dev == only))
			return p;
		(*index)++;
	}
	return NULL;
}

/* ------------------------------------------------------------ devices' pages */

HMM_EXPORT int hmm_device_page_alloc(struct hmm_device *dev, void **page)
{
	bool zeroed;
	int err;

	if (!dev || !page)
		return -EINVAL;
	if (hmm__inherited(dev))
		return -ENODEV;
	err = hmm__pool_alloc(&dev->core->pool, page, &zeroed);
	/* A device of an hmmfs mount: room is reserved from its daemon (and
	 * reserved again if another thread took it first). */
	while (err == -ENOSPC && dev->attached &&
	       !(err = hmm__attached_reserve(dev->attached, &dev->core->pool, 1)))
		err = hmm__pool_alloc(&dev->core->pool, page, &zeroed);
	return err;
}

HMM_EXPORT void hmm_device_page_free(struct hmm_device *dev, void *page)
{
	if (!dev || !page || hmm__inherited(dev))
		return;
	hmm__pool_free(&dev->core->pool, page);
	if (dev->attached)
		hmm__attached_trim(dev->attached, &dev->core->pool);
}

HMM_EXPORT int hmm_device_dma(struct hmm_device *dev, void *dst, const void *src, size_t len)
{
	struct hmm__dma_copy c = { dst, src, len };

	if (!dev || ((!dst || !src) && len))
		return -EINVAL;
	if (hmm__inherited(dev))
		return -ENODEV;
	if (!len)
		return 0;
	return hmm__dma_copy_sync(dev->core->dma, &c, 1);
}

HMM_EXPORT int hmm_device_stats(struct hmm_device *dev, struct hmm_device_stats *st)
{
	struct hmm__device_counters *c;

	if (!dev || !st)
		return -EINVAL;
	if (hmm__inherited(dev))
		return -ENODEV;
	c = &dev->core->counters;
	if (dev->attached) {
		/* The mount's device: its memory (reservations included) and
		 * files' moves, plus this process's anonymous pages' moves. */
		int err = hmm__attached_stats(dev->attached, dev->attached_index, st);

		if (err)
			return err;
	} else {
		memset(st, 0, sizeof(*st));
		st->capacity = hmm__pool_capacity(&dev->core->pool) * page_size();
		st->used = hmm__pool_used(&dev->core->pool) * page_size();
	}
	st->pages_in += __atomic_load_n(&c->pages_in, __ATOMIC_RELAXED);
	st->pages_out += __atomic_load_n(&c->pages_out, __ATOMIC_RELAXED);
	st->cpu_faults += __atomic_load_n(&c->cpu_faults, __ATOMIC_RELAXED);
	return 0;
}

/* ------------------------------------------------------------ invalidations */

static bool anon_invalidate(struct hmm_interval_notifier *sub,
			    const struct hmm_notifier_range *r, uint64_t cur_seq)
{
	uint64_t index, last;
	struct anon_page *p;

	(void)sub;
	(void)cur_seq;
	/* Ours, or the pages stay where they are (protection changes; fork
	 * and mremap evict first). */
	if (r->event != HMM_NOTIFY_UNMAP && r->event != HMM_NOTIFY_CLEAR)
		return true;
	if (!__atomic_load_n(&anon.count, __ATOMIC_RELAXED))
		return true;
	pthread_mutex_lock(&anon.lock);
	index = r->start / page_size();
	last = (r->end - 1) / page_size();
	while ((p = hmm__radix_next(&anon.pages, &index)) && index <= last) {
		if (p->state == ANON_DEVICE || p->state == ANON_EXCLUSIVE) {
			hmm__radix_delete(&anon.pages, index);
			__atomic_sub_fetch(&anon.count, 1, __ATOMIC_RELAXED);
			p->next_dead = anon.dead;
			anon.dead = p;
		} else {
			p->invalid = true;
		}
		index++;
	}
	pthread_mutex_unlock(&anon.lock);
	return true;
}

static const struct hmm_interval_notifier_ops anon_ops = { .invalidate = anon_invalidate };

void hmm__anon_reap(void)
{
	struct anon_page *p;

	if (!__atomic_load_n(&anon.dead, __ATOMIC_RELAXED))
		return;
	/* Under the lock, so that hmm__anon_evict_device, which takes it,
	 * knows no page of its device is still being freed. */
	pthread_mutex_lock(&anon.lock);
	p = anon.dead;
	anon.dead = NULL;
	while (p) {
		struct anon_page *next = p->next_dead;

		if (p->host)
			hmm__free(p->mem);
		else
			hmm_device_page_free(p->dev, p->mem);
		hmm__free(p);
		p = next;
	}
	pthread_mutex_unlock(&anon.lock);
}

/* In a child after fork(): no registration, no subscription, no devices
 * running; device pages were brought back before fork() (invalidate.c). */
static void forget_in_child(void)
{
	pthread_mutex_init(&anon.lock, NULL);
	pthread_cond_init(&anon.settled, NULL);
	hmm__radix_truncate(&anon.pages, 0, NULL, NULL);
	anon.count = 0;
	anon.sub = NULL;
	anon.dead = NULL;
}

static pthread_once_t subscribe_once = PTHREAD_ONCE_INIT;
static int subscribe_err;

static void subscribe(void)
{
	subscribe_err = hmm_interval_notifier_insert(0, HMM__VA_LIMIT, &anon_ops, NULL, &anon.sub);
	if (!subscribe_err)
		pthread_atfork(NULL, NULL, forget_in_child);
}

/* --------------------------------------------------------------- the phases */

/* Call fn(start, end) for each run of consecutive pages i with want(i). */
static int for_runs(const struct hmm_migrate_vma *a, bool (*want)(const struct hmm_migrate_vma *, uint64_t),
		    int (*fn)(uint64_t start, uint64_t end))
{
	uint64_t ps = page_size(), n = a->npages;
	int err = 0;

	for (uint64_t i = 0; i < n;) {
		uint64_t j;

		if (!want(a, i)) {
			i++;
			continue;
		}
		for (j = i + 1; j < n && want(a, j); j++)
			;
		if (fn(a->start + i * ps, a->start + j * ps) && !err)
			err = -1;
		i = j;
	}
	return err;
}

static bool collected(const struct hmm_migrate_vma *a, uint64_t i)
{
	return a->src[i] & HMM_MIGRATE_PFN_MIGRATE;
}

static bool collected_present(const struct hmm_migrate_vma *a, uint64_t i)
{
	return (a->src[i] & HMM_MIGRATE_PFN_MIGRATE) && (a->src[i] & HMM_MIGRATE_PFN_VALID);
}

static int protect_run(uint64_t start, uint64_t end)
{
	return hmm__cpufault_protect(start, end, true);
}

static int unprotect_run(uint64_t start, uint64_t end)
{
	return hmm__cpufault_protect(start, end, false);
}

static int wake_run(uint64_t start, uint64_t end)
{
	return hmm__cpufault_wake(start, end);
}

static int zap_run(uint64_t start, uint64_t end)
{
	/* Ours, bracketed by the caller: its REMOVE event must not come back
	 * as an HMM_NOTIFY_CLEAR that kills the pages being moved. */
	int own = hmm__cpufault_own_begin(start, end);
	int ret = hmm__sys_madvise((void *)(uintptr_t)start, (size_t)(end - start),
				   MADV_DONTNEED);

	hmm__cpufault_own_end(own);
	return ret;
}

static void invalidate_migrate(const struct hmm_migrate_vma *a)
{
	struct hmm_notifier_range r = { a->start, a->end, HMM_NOTIFY_MIGRATE, a->pgmap_owner };

	hmm__invalidate_start(&r);
	hmm__invalidate_end(&r);
}

/* Forget collected page i (setup could not lock it after all). */
static void uncollect(struct hmm_migrate_vma *a, uint64_t i)
{
	entry_drop(a->start + i * page_size());
	a->src[i] = 0;
	a->cpages--;
}

static int setup_system(struct hmm_migrate_vma *a)
{
	uint64_t ps = page_size(), n = a->npages;
	uint8_t *snap = hmm__malloc(n);
	int err;

	if (!snap)
		return -ENOMEM;
	err = hmm__snapshot(a->start, n, snap);
	if (err)
		goto out;
	pthread_mutex_lock(&anon.lock);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t va = a->start + i * ps;
		uint8_t f = snap[i];
		bool present = (f & HMM__SNAP_PRESENT) && !(f & HMM__SNAP_ZERO);
		struct anon_page *p;

		if ((f & (HMM__SNAP_ANON | HMM__SNAP_READ)) != (HMM__SNAP_ANON | HMM__SNAP_READ) ||
		    (f & HMM__SNAP_SWAP) || (present && !(f & HMM__SNAP_EXCL)) || entry(va))
			continue;
		p = hmm__calloc(1, sizeof(*p));
		if (!p || hmm__radix_insert(&anon.pages, va / ps, p)) {
			hmm__free(p);
			err = -ENOMEM;
			break;
		}
		__atomic_add_fetch(&anon.count, 1, __ATOMIC_RELAXED);
		p->state = ANON_TO_DEVICE;
		p->mig = a;
		p->dev = a->pgmap_owner;
		p->present = present;
		a->src[i] = HMM_MIGRATE_PFN_MIGRATE | (present ? hmm_migrate_pfn((void *)(uintptr_t)va) : 0) |
			    (f & HMM__SNAP_WRITE ? HMM_MIGRATE_PFN_WRITE : 0);
		a->cpages++;
	}
	if (err) {
		for (uint64_t i = 0; i < n; i++)
			if (collected(a, i))
				uncollect(a, i);
		pthread_mutex_unlock(&anon.lock);
		goto out;
	}
	pthread_mutex_unlock(&anon.lock);
	if (!a->cpages)
		goto out;

	/* From here on a CPU touch of a hole reaches the monitor. */
	if (for_runs(a, collected, hmm__cpufault_register)) {
		/* A run we cannot register (another userfaultfd has it): page
		 * by page, and give up the pages that fail. */
		pthread_mutex_lock(&anon.lock);
		for (uint64_t i = 0; i < n; i++)
			if (collected(a, i) && hmm__cpufault_register(a->start + i * ps,
								       a->start + (i + 1) * ps))
				uncollect(a, i);
		pthread_mutex_unlock(&anon.lock);
	}
	invalidate_migrate(a);
	for_runs(a, collected, protect_run);
	/* A hole the CPU filled before the registration is a page now, maybe
	 * written: it is write-protected by now, and its data must move. */
	err = hmm__snapshot(a->start, n, snap);
	if (err) {
		err = 0; /* the snapshot is only a refinement: keep what we have */
		memset(snap, 0, n);
	}
	pthread_mutex_lock(&anon.lock);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t va = a->start + i * ps;

		if (collected(a, i) && !(a->src[i] & HMM_MIGRATE_PFN_VALID) &&
		    (snap[i] & HMM__SNAP_PRESENT) && !(snap[i] & HMM__SNAP_ZERO)) {
			entry(va)->present = true;
			a->src[i] |= hmm_migrate_pfn((void *)(uintptr_t)va);
		}
	}
	pthread_mutex_unlock(&anon.lock);
	for_runs(a, collected_present, protect_run);
out:
	hmm__free(snap);
	return err;
}

static void setup_device(struct hmm_migrate_vma *a)
{
	uint64_t ps = page_size();

	pthread_mutex_lock(&anon.lock);
	for (uint64_t i = 0; i < a->npages; i++) {
		struct anon_page *p = entry(a->start + i * ps);

		if (!p || p->state != ANON_DEVICE || p->dev != a->pgmap_owner)
			continue;
		p->state = ANON_TO_RAM;
		p->mig = a;
		a->src[i] = hmm_migrate_pfn(p->mem) | HMM_MIGRATE_PFN_MIGRATE;
		a->cpages++;
	}
	pthread_mutex_unlock(&anon.lock);
	/* Mirrors of the device drop their entries for its pages. */
	if (a->cpages)
		invalidate_migrate(a);
}

HMM_EXPORT int hmm_migrate_vma_setup(struct hmm_migrate_vma *a)
{
	uint64_t ps = page_size();
	int err;

	if (!a || !a->src || !a->dst || !a->pgmap_owner || a->reserved ||
	    a->end <= a->start || (a->start | a->end) & (ps - 1) || a->end > HMM__VA_LIMIT ||
	    (a->flags != HMM_MIGRATE_VMA_SELECT_SYSTEM &&
	     a->flags != HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE))
		return -EINVAL;
	if (hmm__inherited(a->pgmap_owner))
		return -ENODEV;
	a->npages = (a->end - a->start) / ps;
	a->cpages = 0;
	memset(a->src, 0, a->npages * sizeof(*a->src));
	memset(a->dst, 0, a->npages * sizeof(*a->dst));
	pthread_once(&subscribe_once, subscribe);
	if (subscribe_err)
		return subscribe_err;
	err = hmm__cpufault_start();
	if (err)
		return err;
	hmm__launch_quiesce_self();
	/* A raw munmap that returned before us is invalidated first, so that
	 * its late invalidation cannot take the pages we are about to move. */
	hmm__uffd_sync();
	if (a->flags == HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE) {
		setup_device(a);
		return 0;
	}
	return setup_system(a);
}

/*
 * Back to host RAM: place pages [i, j) of a (all collected, valid, with
 * destinations) from their buffers, with one UFFDIO_COPY where the buffers
 * follow each other, else page by page.  A page that cannot be placed (its
 * mapping went) loses MIGRATE.  Context: anon.lock held.
 */
static void place_run(struct hmm_migrate_vma *a, uint64_t i, uint64_t j)
{
	uint64_t ps = page_size();
	char *first = hmm_migrate_pfn_to_addr(a->dst[i]);
	bool contiguous = true;

	for (uint64_t k = i + 1; k < j && contiguous; k++)
		contiguous = hmm_migrate_pfn_to_addr(a->dst[k]) == first + (k - i) * ps;
	if (contiguous && !hmm__cpufault_fill(a->start + i * ps, first, (j - i) * ps, false, false))
		return;
	for (uint64_t k = i; k < j; k++) {
		uint64_t va = a->start + k * ps;

		/* After a partial run, the pages it placed answer EEXIST. */
		int err = hmm__cpufault_fill(va, hmm_migrate_pfn_to_addr(a->dst[k]), ps, false, false);

		if (err && err != -EEXIST) {
			a->src[k] &= ~HMM_MIGRATE_PFN_MIGRATE;
			entry(va)->committed = false;
		}
	}
}

HMM_EXPORT void hmm_migrate_vma_pages(struct hmm_migrate_vma *a)
{
	uint64_t ps = page_size(), run = UINT64_MAX;
	bool any = false;

	if (!a || !a->cpages)
		return;
	pthread_mutex_lock(&anon.lock);
	for (uint64_t i = 0; i <= a->npages; i++) {
		uint64_t va = a->start + i * ps;
		struct anon_page *p = NULL;
		bool ok = false;

		if (i < a->npages && collected(a, i)) {
			p = entry(va);
			ok = p && p->mig == a && !p->invalid && (a->dst[i] & HMM_MIGRATE_PFN_VALID);
			if (!ok)
				a->src[i] &= ~HMM_MIGRATE_PFN_MIGRATE;
		}
		if (ok && p->state == ANON_TO_DEVICE) {
			p->mem = hmm_migrate_pfn_to_addr(a->dst[i]);
			p->zapped = true;
			any = true;
		}
		if (ok)
			p->committed = true;
		/* TO_RAM pages are placed in runs. */
		if (ok && p->state == ANON_TO_RAM) {
			if (run == UINT64_MAX)
				run = i;
		} else if (run != UINT64_MAX) {
			place_run(a, run, i);
			run = UINT64_MAX;
		}
	}
	pthread_mutex_unlock(&anon.lock);
	/* To a device: the CPU pages go (every page still collected is
	 * committed); a fault on them now waits for finalize.  Devices drop
	 * them first: none may use a CPU page after it went. */
	if (any) {
		/* Bracketing the zap, as the kernel brackets a page-table change:
		 * a range fault that began after the end sees the pages gone. */
		struct hmm_notifier_range r = { a->start, a->end, HMM_NOTIFY_MIGRATE,
						a->pgmap_owner };

		hmm__invalidate_start(&r);
		pthread_mutex_lock(&anon.lock);
		for_runs(a, collected, zap_run);
		pthread_mutex_unlock(&anon.lock);
		hmm__invalidate_end(&r);
	}
}

HMM_EXPORT void hmm_migrate_vma_finalize(struct hmm_migrate_vma *a)
{
	uint64_t ps = page_size(), pages_in = 0, pages_out = 0;
	struct hmm_device *dev;
	bool unprotect = false;

	if (!a || !a->cpages)
		return;
	dev = a->pgmap_owner;
	pthread_mutex_lock(&anon.lock);
	for (uint64_t i = 0; i < a->npages; i++) {
		uint64_t va = a->start + i * ps;
		struct anon_page *p = entry(va);
		void *dst = a->dst[i] & HMM_MIGRATE_PFN_VALID ? hmm_migrate_pfn_to_addr(a->dst[i]) : NULL;

		/* Only this migration's pages: a page restored from exclusive
		 * access, or moved by another migration, is not ours. */
		if (!p || p->mig != a)
			continue;
		p->mig = NULL;
		if (p->state == ANON_TO_DEVICE) {
			if (p->committed && !p->invalid) {
				p->state = ANON_DEVICE;
				p->committed = p->zapped = p->present = false;
				pages_in++;
				continue;
			}
			/* Not moved: the device page goes back, the CPU page stays. */
			if (dst)
				hmm_device_page_free(dev, dst);
			if (!p->zapped && p->present)
				unprotect = true;
			entry_drop(va);
			continue;
		}
		/* TO_RAM */
		if (p->committed || p->invalid) {
			if (p->committed)
				pages_out++;
			hmm_device_page_free(dev, p->mem);
			entry_drop(va);
			continue;
		}
		p->state = ANON_DEVICE;
	}
	/* Counted before the lock goes: once no page of the device is in
	 * the table, hmm_device_destroy may free it. */
	if (pages_in) {
		__atomic_add_fetch(&dev->core->counters.pages_in, pages_in, __ATOMIC_RELAXED);
		__atomic_add_fetch(&dev->core->counters.bytes_in, pages_in * ps, __ATOMIC_RELAXED);
	}
	if (pages_out) {
		__atomic_add_fetch(&dev->core->counters.pages_out, pages_out, __ATOMIC_RELAXED);
		__atomic_add_fetch(&dev->core->counters.bytes_out, pages_out * ps, __ATOMIC_RELAXED);
		if (serving_cpu_fault)
			__atomic_add_fetch(&dev->core->counters.cpu_faults, pages_out,
					   __ATOMIC_RELAXED);
	}
	pthread_cond_broadcast(&anon.settled);
	pthread_mutex_unlock(&anon.lock);
	if (unprotect)
		for_runs(a, collected_present, unprotect_run);
	/* Pages placed back in host RAM: their faults may go on now. */
	if (a->flags == HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE && pages_out)
		for_runs(a, collected, wake_run);
	hmm__cpufault_kick();
}

/* ------------------------------------------------------- exclusive access */

/*
 * The kernel's make_device_exclusive replaces the CPU's entry of a page
 * with one that faults on any CPU access, so that a device can do atomics
 * on the page while the CPU cannot see a half-done one; the fault puts the
 * CPU's entry back (after telling the devices, HMM_NOTIFY_EXCLUSIVE with no
 * owner).  Here the page's data moves to a host page that only the device
 * maps, and the CPU page goes, through the same userfaultfd as migration:
 * a CPU access faults and restore_exclusive() places the data back.
 */

/* Put an EXCLUSIVE page back in the CPU's hands. */
static void restore_exclusive(uint64_t va)
{
	uint64_t ps = page_size();
	struct hmm_notifier_range r = { va, va + ps, HMM_NOTIFY_EXCLUSIVE, NULL };
	struct anon_page *p;

	pthread_mutex_lock(&anon.lock);
	p = entry(va);
	if (!p || p->state != ANON_EXCLUSIVE) {
		pthread_mutex_unlock(&anon.lock);
		return;
	}
	p->state = ANON_TO_RAM; /* faults on it wait */
	pthread_mutex_unlock(&anon.lock);
	/* The device stops using its copy first. */
	hmm__invalidate_start(&r);
	hmm__invalidate_end(&r);
	pthread_mutex_lock(&anon.lock);
	if (!p->invalid)
		hmm__cpufault_fill(va, p->mem, ps, false, true);
	hmm__free(p->mem);
	entry_drop(va);
	pthread_cond_broadcast(&anon.settled);
	pthread_mutex_unlock(&anon.lock);
	hmm__cpufault_wake(va, va + ps);
	hmm__cpufault_kick();
}

/* Restore every EXCLUSIVE page of [start, end) (of device only, if set). */
static void restore_exclusive_range(uint64_t start, uint64_t end, const void *only)
{
	uint64_t index = start / page_size(), last = (end - 1) / page_size();

	for (;;) {
		bool found;

		pthread_mutex_lock(&anon.lock);
		found = find_entry(&index, last, ANON_EXCLUSIVE, only);
		pthread_mutex_unlock(&anon.lock);
		if (!found)
			return;
		restore_exclusive(index * page_size());
		index++;
	}
}

/* Rounds of hmm__anon_make_exclusive before giving up with -EBUSY. */
#define EXCLUSIVE_RETRIES 4096

int hmm__anon_make_exclusive(struct hmm_device *owner, uint64_t start, uint64_t end,
			     struct hmm__exclusive_add *add)
{
	uint64_t ps = page_size(), n = (end - start) / ps;
	struct hmm_notifier_range r = { start, end, HMM_NOTIFY_EXCLUSIVE, owner };
	uint8_t *snap = hmm__malloc(n);
	void **copies = hmm__calloc(n, sizeof(*copies));
	bool *mine = hmm__calloc(n, sizeof(*mine)), any = false, started = false;
	int err;

	if (!snap || !copies || !mine) {
		err = -ENOMEM;
		goto out;
	}
	pthread_once(&subscribe_once, subscribe);
	err = subscribe_err ? subscribe_err : hmm__cpufault_start();
	if (err)
		goto out;
	err = hmm__snapshot(start, n, snap);
	if (err)
		goto out;
	for (uint64_t i = 0; i < n; i++) {
		if (!(snap[i] & HMM__SNAP_MAPPED) || !(snap[i] & HMM__SNAP_READ)) {
			err = -EFAULT;
			goto out;
		}
		if (!(snap[i] & HMM__SNAP_WRITE)) {
			err = -EPERM;
			goto out;
		}
	}
	for (int tries = 0;; tries++) {
		uint64_t busy = UINT64_MAX;
		bool transient = false;

		/* Present and writable, as get_user_pages(FOLL_WRITE) makes them
		 * (breaking copy-on-write); a page on a device comes back.  Pages
		 * already exclusive to owner are left alone: touching them would
		 * put them back. */
		for (uint64_t i = 0; i < n; i++) {
			uint64_t j = i;

			while (j < n && !hmm__anon_exclusive_mem(owner, start + j * ps))
				j++;
			if (j > i && madvise((void *)(uintptr_t)(start + i * ps), (j - i) * ps,
					     MADV_POPULATE_WRITE)) {
				err = errno == EINVAL || errno == ENOMEM ? -EFAULT : -errno;
				goto out;
			}
			i = j;
		}
		err = hmm__snapshot(start, n, snap);
		if (err)
			goto out;
		pthread_mutex_lock(&anon.lock);
		for (uint64_t i = 0; i < n && !err && !transient; i++) {
			uint64_t va = start + i * ps;
			struct anon_page *p = entry(va);
			uint8_t f = snap[i];

			if (p && p->state == ANON_EXCLUSIVE && p->dev == owner)
				continue; /* already */
			if ((f & (HMM__SNAP_ANON | HMM__SNAP_WRITE)) != (HMM__SNAP_ANON | HMM__SNAP_WRITE)) {
				err = -EFAULT;
				break;
			}
			/* Moving, on a device, exclusive to another device, or
			 * changed since the snapshot: try again. */
			if (p || !(f & HMM__SNAP_PRESENT) || !(f & HMM__SNAP_EXCL) ||
			    (f & HMM__SNAP_ZERO)) {
				transient = true;
				busy = p ? va : UINT64_MAX;
				break;
			}
			p = hmm__calloc(1, sizeof(*p));
			if (!copies[i])
				copies[i] = hmm__aligned_alloc(ps, ps);
			if (!p || !copies[i] || hmm__radix_insert(&anon.pages, va / ps, p)) {
				hmm__free(p);
				err = -ENOMEM;
				break;
			}
			__atomic_add_fetch(&anon.count, 1, __ATOMIC_RELAXED);
			p->state = ANON_TO_DEVICE; /* locked, as for a migration */
			p->dev = owner;
			p->present = true;
			mine[i] = true;
		}
		if (!err && !transient)
			break;
		for (uint64_t i = 0; i < n; i++)
			if (mine[i])
				entry_drop(start + i * ps);
		memset(mine, 0, n * sizeof(*mine));
		if (err || tries == EXCLUSIVE_RETRIES) {
			/* Pages that keep changing hands (a CPU thread using
			 * them all the time) can exhaust the rounds: -EBUSY. */
			pthread_mutex_unlock(&anon.lock);
			err = err ? err : -EBUSY;
			goto out;
		}
		if (busy != UINT64_MAX) {
			struct anon_page *p = entry(busy);

			if (p && p->state == ANON_EXCLUSIVE) {
				/* Another device's: take it back for ours. */
				pthread_mutex_unlock(&anon.lock);
				restore_exclusive(busy);
				continue;
			}
			while ((p = entry(busy)) && moving(p))
				pthread_cond_wait(&anon.settled, &anon.lock);
		}
		pthread_mutex_unlock(&anon.lock);
	}
	pthread_mutex_unlock(&anon.lock);
	for (uint64_t i = 0; i < n; i++)
		if (mine[i] && !err)
			err = hmm__cpufault_register(start + i * ps, start + (i + 1) * ps);
	for (uint64_t i = 0; i < n && !any; i++)
		any = mine[i];
	if (!err && any) {
		/* Devices drop the pages; then CPU writes wait, and the data is
		 * copied while it cannot change.  The invalidation ends once the
		 * CPU pages are gone (below), as the kernel brackets a change. */
		hmm__invalidate_start(&r);
		started = true;
		for (uint64_t i = 0; i < n && !err; i++)
			if (mine[i])
				err = hmm__cpufault_protect(start + i * ps, start + (i + 1) * ps, true);
		/* Write-protected: program threads' writes all came before. */
		HMM_TSAN_IGNORE_BEGIN();
		for (uint64_t i = 0; i < n && !err; i++)
			if (mine[i])
				memcpy(copies[i], (void *)(uintptr_t)(start + i * ps), ps);
		HMM_TSAN_IGNORE_END();
	}
	pthread_mutex_lock(&anon.lock);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t va = start + i * ps;
		struct anon_page *p;

		if (!mine[i])
			continue;
		p = entry(va);
		if (err || p->invalid) {
			/* Unmapped or cleared meanwhile, or a failure: the page
			 * stays the CPU's. */
			hmm__cpufault_protect(va, va + ps, false);
			entry_drop(va);
			if (!err)
				err = -EFAULT;
			continue;
		}
		zap_run(va, va + ps);
		p->state = ANON_EXCLUSIVE;
		p->host = true;
		p->present = false;
		p->mem = copies[i];
		copies[i] = NULL;
	}
	/* The atomic that faulted, while the page is surely held: it makes
	 * progress however often the CPU takes the page back afterwards. */
	if (add && !err) {
		struct anon_page *p = entry(add->va & ~(ps - 1));

		if (p && p->state == ANON_EXCLUSIVE && p->dev == owner) {
			add->old = __atomic_fetch_add((uint64_t *)((char *)p->mem +
								   (add->va & (ps - 1))),
						      add->v, __ATOMIC_SEQ_CST);
			add->done = true;
		}
	}
	pthread_cond_broadcast(&anon.settled);
	pthread_mutex_unlock(&anon.lock);
	if (started)
		hmm__invalidate_end(&r);
	hmm__cpufault_kick();
out:
	if (copies)
		for (uint64_t i = 0; i < n; i++)
			hmm__free(copies[i]);
	hmm__free(copies);
	hmm__free(mine);
	hmm__free(snap);
	return err;
}

void *hmm__anon_exclusive_mem(const void *owner, uint64_t va)
{
	struct anon_page *p;
	void *mem = NULL;

	pthread_mutex_lock(&anon.lock);
	p = entry(va);
	if (p && p->state == ANON_EXCLUSIVE && p->dev == owner)
		mem = p->mem;
	pthread_mutex_unlock(&anon.lock);
	return mem;
}

/* ------------------------------------------------------- the simple calls */

static bool on_device(uint64_t va, const struct hmm_device *dev)
{
	struct anon_page *p;
	bool on;

	pthread_mutex_lock(&anon.lock);
	p = entry(va);
	on = p && p->state == ANON_DEVICE && p->dev == dev;
	pthread_mutex_unlock(&anon.lock);
	return on;
}

/* Pages per round of the simple calls. */
#define ROUND_PAGES 512

HMM_EXPORT int hmm_migrate_to_device(struct hmm_device *dev, void *start, size_t len,
				     uint64_t *moved)
{
	uint64_t ps = page_size(), va = (uint64_t)(uintptr_t)start, end = va + len;
	uint64_t src[ROUND_PAGES], dst[ROUND_PAGES], total = 0;
	int err = 0;
	bool missed = false;
	int alloc_err = 0; /* what stopped the allocations (-ENOSPC: full) */

	if (moved)
		*moved = 0;
	if (!dev || !len || (va | len) & (ps - 1) || end < va)
		return -EINVAL;
	if (hmm__inherited(dev))
		return -ENODEV;
	for (; va < end && !err; va += ROUND_PAGES * ps) {
		struct hmm_migrate_vma a = {
			.start = va,
			.end = end - va > ROUND_PAGES * ps ? va + ROUND_PAGES * ps : end,
			.src = src,
			.dst = dst,
			.pgmap_owner = dev,
			.flags = HMM_MIGRATE_VMA_SELECT_SYSTEM,
		};
		struct hmm__dma_copy copies[ROUND_PAGES];
		size_t ncopies = 0;

		err = hmm_migrate_vma_setup(&a);
		if (err)
			break;
		/* Pages already on dev are where they should be. */
		for (uint64_t i = 0; i < a.npages && !missed; i++)
			if (!src[i] && !on_device(va + i * ps, dev))
				missed = true;
		for (uint64_t i = 0; i < a.npages; i++) {
			void *page;

			if (!(src[i] & HMM_MIGRATE_PFN_MIGRATE))
				continue;
			alloc_err = hmm_device_page_alloc(dev, &page);
			if (alloc_err)
				break;
			if (src[i] & HMM_MIGRATE_PFN_VALID)
				copies[ncopies++] = (struct hmm__dma_copy){
					page, hmm_migrate_pfn_to_addr(src[i]), ps };
			else
				memset(page, 0, ps);
			dst[i] = hmm_migrate_pfn(page);
		}
		if (ncopies && hmm__dma_copy_sync(dev->core->dma, copies, ncopies)) {
			/* Nothing moves; finalize frees the destinations. */
			err = -ENOMEM;
			for (uint64_t i = 0; i < a.npages; i++)
				if (dst[i])
					hmm_device_page_free(dev, hmm_migrate_pfn_to_addr(dst[i]));
			memset(dst, 0, a.npages * sizeof(*dst));
		}
		hmm_migrate_vma_pages(&a);
		for (uint64_t i = 0; i < a.npages; i++)
			if (src[i] & HMM_MIGRATE_PFN_MIGRATE)
				total++;
		hmm_migrate_vma_finalize(&a);
		if (alloc_err)
			break;
	}
	if (moved)
		*moved = total;
	if (err)
		return err;
	return alloc_err ? alloc_err : missed ? -ENOENT : 0;
}

/*
 * Bring back the pages of [start, end) that are on dev, through the three
 * phases, with a staging buffer.  Return: pages moved, or -ENOMEM.
 */
static long to_ram(struct hmm_device *dev, uint64_t start, uint64_t end)
{
	uint64_t ps = page_size(), n = (end - start) / ps;
	uint64_t *src = hmm__malloc(n * sizeof(*src)), *dst = hmm__malloc(n * sizeof(*dst));
	char *staging = hmm__aligned_alloc(ps, n * ps);
	struct hmm_migrate_vma a = {
		.start = start, .end = end, .src = src, .dst = dst,
		.pgmap_owner = dev, .flags = HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	struct hmm__dma_copy *copies = hmm__malloc(n * sizeof(*copies));
	size_t ncopies = 0;
	long moved = -ENOMEM;

	if (!src || !dst || !staging || !copies || hmm_migrate_vma_setup(&a))
		goto out;
	for (uint64_t i = 0; i < n; i++) {
		if (!(src[i] & HMM_MIGRATE_PFN_MIGRATE))
			continue;
		copies[ncopies++] = (struct hmm__dma_copy){ staging + i * ps,
							    hmm_migrate_pfn_to_addr(src[i]), ps };
		dst[i] = hmm_migrate_pfn(staging + i * ps);
	}
	if (ncopies && hmm__dma_copy_sync(dev->core->dma, copies, ncopies))
		memset(dst, 0, n * sizeof(*dst));
	hmm_migrate_vma_pages(&a);
	moved = 0;
	for (uint64_t i = 0; i < n; i++)
		if (src[i] & HMM_MIGRATE_PFN_MIGRATE)
			moved++;
	hmm_migrate_vma_finalize(&a);
out:
	hmm__free(src);
	hmm__free(dst);
	hmm__free(staging);
	hmm__free(copies);
	return moved;
}

/* The device of the first DEVICE page in [*va, end), with *va set to it. */
static struct hmm_device *next_device_page(uint64_t *va, uint64_t end, const void *only)
{
	uint64_t index = *va / page_size(), last = (end - 1) / page_size();
	struct hmm_device *dev = NULL;
	struct anon_page *p;

	pthread_mutex_lock(&anon.lock);
	p = find_entry(&index, last, ANON_DEVICE, only);
	if (p) {
		dev = p->dev;
		*va = index * page_size();
	}
	pthread_mutex_unlock(&anon.lock);
	return dev;
}

static long evict(uint64_t start, uint64_t end, const void *only)
{
	uint64_t ps = page_size(), va = start;
	struct hmm_device *dev;
	long total = 0;

	if (!__atomic_load_n(&anon.count, __ATOMIC_RELAXED))
		return 0;
	restore_exclusive_range(start, end, only);
	while (va < end && (dev = next_device_page(&va, end, only))) {
		uint64_t stop = end - va > ROUND_PAGES * ps ? va + ROUND_PAGES * ps : end;
		long n = to_ram(dev, va, stop);

		if (n < 0)
			return n;
		total += n;
		va = stop;
	}
	return total;
}

HMM_EXPORT int hmm_migrate_to_ram(void *start, size_t len, uint64_t *moved)
{
	uint64_t ps = page_size(), va = (uint64_t)(uintptr_t)start;
	long n;

	if (moved)
		*moved = 0;
	if (!len || (va | len) & (ps - 1) || va + len < va || va + len > HMM__VA_LIMIT)
		return -EINVAL;
	n = evict(va, va + len, NULL);
	if (n < 0)
		return (int)n;
	if (moved)
		*moved = (uint64_t)n;
	return 0;
}

HMM_EXPORT int hmm_device_evict(struct hmm_device *dev)
{
	if (!dev)
		return -EINVAL;
	if (hmm__inherited(dev))
		return -ENODEV;
	hmm__anon_evict_device(dev);
	return 0;
}

void hmm__anon_evict(uint64_t start, uint64_t end)
{
	evict(start, end, NULL);
}

/* Does any page of the table belong to dev?  Context: anon.lock held. */
static bool device_has_pages(const void *dev, bool *busy)
{
	uint64_t index = 0;
	struct anon_page *p;
	bool any = false;

	*busy = false;
	while ((p = hmm__radix_next(&anon.pages, &index))) {
		if (p->dev == dev) {
			any = true;
			if (moving(p))
				*busy = true;
		}
		index++;
	}
	return any;
}

void hmm__anon_evict_device(const void *dev)
{
	bool busy;

	/* Bring everything back, then wait for what was moving meanwhile (a
	 * CPU fault bringing a page back) and for the reaper, which frees
	 * pages under the lock. */
	for (int round = 0; round < 64; round++) {
		evict(0, HMM__VA_LIMIT, dev);
		pthread_mutex_lock(&anon.lock);
		if (!device_has_pages(dev, &busy)) {
			pthread_mutex_unlock(&anon.lock);
			return;
		}
		if (busy)
			pthread_cond_wait(&anon.settled, &anon.lock);
		pthread_mutex_unlock(&anon.lock);
	}
}

/* ------------------------------------------------------ the CPU and devices */

bool hmm__anon_any(void)
{
	return __atomic_load_n(&anon.count, __ATOMIC_RELAXED) != 0;
}

int hmm__anon_lookup(const void *owner, uint64_t va, uint64_t *out)
{
	struct anon_page *p;
	int found = 0;

	if (!__atomic_load_n(&anon.count, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&anon.lock);
	p = entry(va);
	if (p && p->state == ANON_DEVICE) {
		if (owner && p->dev == owner) {
			*out = HMM_PFN_VALID | ((uint64_t)(uintptr_t)p->mem >> 12);
			found = 1;
		}
	} else if (p && moving(p)) {
		/* Being migrated: wait, as the kernel waits on a migration entry. */
		while ((p = entry(va)) && moving(p))
			pthread_cond_wait(&anon.settled, &anon.lock);
		found = -EBUSY;
	}
	/* EXCLUSIVE: absent; a fault puts the page back (restore_exclusive). */
	pthread_mutex_unlock(&anon.lock);
	return found;
}

int hmm__anon_cpu_fault(uint64_t va, bool wp)
{
	uint64_t ps = page_size();
	struct anon_page *p;
	struct hmm_device *dev;
	int err = 0;

	pthread_mutex_lock(&anon.lock);
	p = entry(va);
	if (!p || (p->state == ANON_TO_DEVICE && p->invalid && !wp)) {
		/* An ordinary page: a hole gets zeros, a protection goes. */
		if (wp)
			err = hmm__cpufault_protect(va, va + ps, false);
		else if (hmm__cpufault_fill(va, zero_page(), ps, false, true) == -EEXIST)
			hmm__cpufault_wake(va, va + ps);
		pthread_mutex_unlock(&anon.lock);
		return err == -ENOMEM ? -EAGAIN : 0;
	}
	if (p->state == ANON_TO_DEVICE && !wp && !p->zapped) {
		/* A hole on its way: reads see zeros, writes wait. */
		if (hmm__cpufault_fill(va, zero_page(), ps, true, true) == -EEXIST)
			hmm__cpufault_wake(va, va + ps);
		pthread_mutex_unlock(&anon.lock);
		return 0;
	}
	if (p->state == ANON_EXCLUSIVE) {
		pthread_mutex_unlock(&anon.lock);
		restore_exclusive(va);
		return 0;
	}
	if (p->state != ANON_DEVICE) {
		pthread_mutex_unlock(&anon.lock);
		return -EAGAIN;
	}
	dev = p->dev;
	pthread_mutex_unlock(&anon.lock);
	/* migrate_to_ram: the three phases on this page; finalize counts the
	 * CPU fault (while the device surely exists) and wakes the thread. */
	serving_cpu_fault = true;
	to_ram(dev, va, va + ps);
	serving_cpu_fault = false;
	/* Whatever happened (someone else moved it, it went away), the thread
	 * must not sleep on: it faults again if it must. */
	hmm__cpufault_wake(va, va + ps);
	return 0;
}
