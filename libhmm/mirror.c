/* SPDX-License-Identifier: MIT */
/*
 * Embedded devices and their mirrors of this process.
 *
 * A mirror is what a driver keeps for one process: a device page table
 * (pagetable.h, the reference radix format), an interval notifier over the
 * whole user address space, and the driver lock that orders the two.  The
 * device reaches system memory at the address the CPU uses, so a device
 * page-table entry for system memory maps a page to itself; what the table
 * adds is the HMM contract: the device may only touch what its table maps,
 * with the permission the entry gives, and an invalidation takes entries
 * away before the CPU's mapping changes.
 *
 * Device access.  hmm_mirror_read/write translate page by page under the
 * driver lock and copy while still holding it, so an invalidation (whose
 * callback takes the same lock) waits for an access in flight: that is the
 * TLB shootdown of this simple MMU.  A missing or too weak entry is a
 * device fault: the lock is dropped, hmm_range_fault() runs for the rest of
 * the access under the sequence protocol, the entries are installed, and
 * the access resumes.
 *
 * Lock order: mirror->lock is taken by the invalidate callback, so nothing
 * that invalidates (munmap, mprotect, ...) may run under it, and it is
 * never held across hmm_range_fault().  device->lock (only creation and
 * destruction of the mirror) is a leaf.
 */
#define _GNU_SOURCE
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* Pages faulted per hmm_range_fault() call of a fault round. */
#define FAULT_WINDOW 512

HMM_EXPORT int hmm_device_create(const struct hmm_device_config *cfg, struct hmm_device **out)
{
	struct hmm__device_config core = { 0 };
	long ps = sysconf(_SC_PAGESIZE);
	struct hmm_device *dev;
	int err;

	if (!cfg || !out || cfg->size != sizeof(*cfg) ||
	    (cfg->type != HMM_DEVICE_PRIVATE && cfg->type != HMM_DEVICE_COHERENT) ||
	    cfg->memory < (uint64_t)ps || cfg->dma_engines > HMM_MAX_DEVICES ||
	    cfg->compute_units > HMM_MAX_COMPUTE_UNITS)
		return -EINVAL;
	if (cfg->numa_node != -1 && !hmm__numa_node_exists(cfg->numa_node))
		return -ENODEV;
	core.type = cfg->type == HMM_DEVICE_COHERENT ? HMM__DEVICE_COHERENT : HMM__DEVICE_PRIVATE;
	core.capacity = cfg->memory;
	core.page_size = (size_t)ps;
	core.numa_node = cfg->numa_node;
	core.dma_engines = cfg->dma_engines ? cfg->dma_engines : 1;
	core.dma_bw = cfg->dma_bw;
	core.dma_latency_ns = cfg->dma_latency_ns;
	dev = hmm__calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	err = hmm__device_create(0, &core, &dev->core);
	if (err) {
		hmm__free(dev);
		return err;
	}
	pthread_mutex_init(&dev->lock, NULL);
	dev->pid = hmm__self_pid();
	dev->compute_units = cfg->compute_units ? cfg->compute_units
						: hmm__default_compute_units();
	*out = dev;
	return 0;
}

unsigned hmm__default_compute_units(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > HMM_MAX_COMPUTE_UNITS ? HMM_MAX_COMPUTE_UNITS : (unsigned)n;
}

/*
 * A fork child forgets what it inherited: the threads are the parent's and
 * the locks may be held by them for ever; the child's copy of the memory
 * goes.  Its anonymous pages came back before the fork (invalidate.c), and
 * an attached device's session is the parent's.
 */
static int device_forget(struct hmm_device *dev)
{
	if (dev->mirror)
		return -EBUSY;
	if (dev->attached)
		hmm__attached_detach(dev->attached); /* foreign: only forgets */
	hmm__device_forget(dev->core);
	hmm__free(dev);
	return 0;
}

HMM_EXPORT int hmm_device_destroy(struct hmm_device *dev)
{
	if (!dev)
		return 0;
	if (hmm__inherited(dev))
		return device_forget(dev);
	pthread_mutex_lock(&dev->lock);
	if (dev->mirror) {
		pthread_mutex_unlock(&dev->lock);
		return -EBUSY;
	}
	pthread_mutex_unlock(&dev->lock);
	/* Anonymous memory on the device comes back first, as when a
	 * driver's device memory goes away. */
	hmm__anon_evict_device(dev);
	if (dev->attached)
		hmm__attached_detach(dev->attached); /* its reservations end */
	hmm__device_destroy(dev->core);
	pthread_mutex_destroy(&dev->lock);
	hmm__free(dev);
	return 0;
}

/*
 * Make every compute unit's TLB forget what the page table no longer has,
 * and wait for the accesses that may still use an old translation (see
 * mirror.h).  Context: m->lock held, the table already changed.
 */
static void shootdown(struct hmm_mirror *m)
{
	uint64_t gen = __atomic_add_fetch(&m->tlb_gen, 1, __ATOMIC_SEQ_CST);
	unsigned n = __atomic_load_n(&m->ncus, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++) {
		uint64_t a;

		while ((a = __atomic_load_n(&m->cus[i].in_access, __ATOMIC_SEQ_CST)) && a < gen)
			sched_yield();
	}
}

static bool mirror_invalidate(struct hmm_interval_notifier *sub,
			      const struct hmm_notifier_range *r, uint64_t cur_seq)
{
	struct hmm_mirror *m = hmm_interval_notifier_priv(sub);
	uint64_t dropped;

	/* A kernel unmapping memory must not wait for its own unit. */
	hmm__launch_quiesce_self();
	pthread_mutex_lock(&m->lock);
	hmm_interval_set_seq(sub, cur_seq);
	/* Every kind of change drops the entries: a protection change could
	 * only downgrade them, but dropping is always allowed (the device
	 * faults again), and the fault sees the new protection. */
	dropped = m->pt_ops->unmap(m->pt, r->start, r->end);
	m->stats.invalidations++;
	m->stats.pages_invalidated += dropped;
	m->stats.mapped_pages -= dropped;
	if (dropped)
		shootdown(m);
	pthread_mutex_unlock(&m->lock);
	return true;
}

static const struct hmm_interval_notifier_ops mirror_ops = { .invalidate = mirror_invalidate };

static bool pt_ops_complete(const struct hmm_pt_ops *o)
{
	return o->size == sizeof(*o) && o->create && o->destroy && o->map && o->unmap &&
	       o->protect && o->lookup && o->walk && o->footprint;
}

HMM_EXPORT int hmm_mirror_create(struct hmm_device *dev, struct hmm_mirror **out)
{
	return hmm_mirror_create_pt(dev, NULL, out);
}

HMM_EXPORT int hmm_mirror_create_pt(struct hmm_device *dev, const struct hmm_pt_ops *ops,
				    struct hmm_mirror **out)
{
	struct hmm_mirror *m;
	int err;

	if (!dev || !out || (ops && !pt_ops_complete(ops)))
		return -EINVAL;
	if (hmm__inherited(dev))
		return -ENODEV;
	m = hmm__calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->dev = dev;
	m->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	m->pt_ops = ops ? ops : &hmm__pt_radix_ops;
	m->tlb_gen = 1;
	pthread_mutex_init(&m->lock, NULL);
	hmm__fault_buffer_init(&m->faults);
	hmm__advice_init(&m->advice);
	err = m->pt_ops->create(&m->pt);
	if (err)
		goto out_free;
	pthread_mutex_lock(&dev->lock);
	if (dev->mirror) {
		pthread_mutex_unlock(&dev->lock);
		err = -EEXIST;
		goto out_pt;
	}
	dev->mirror = m;
	pthread_mutex_unlock(&dev->lock);
	/* The whole user address space, as a driver that mirrors any pointer. */
	err = hmm_interval_notifier_insert(0, HMM__VA_LIMIT, &mirror_ops, m, &m->sub);
	if (err) {
		pthread_mutex_lock(&dev->lock);
		dev->mirror = NULL;
		pthread_mutex_unlock(&dev->lock);
		goto out_pt;
	}
	*out = m;
	return 0;

out_pt:
	m->pt_ops->destroy(m->pt);
out_free:
	hmm__fault_buffer_destroy(&m->faults);
	hmm__advice_destroy(&m->advice);
	pthread_mutex_destroy(&m->lock);
	hmm__free(m);
	return err;
}

HMM_EXPORT void hmm_mirror_destroy(struct hmm_mirror *m)
{
	bool inherited;

	if (!m)
		return;
	/* Inherited across fork: only forgotten (see device_forget()). */
	inherited = hmm__inherited(m->dev);
	if (inherited)
		hmm__launch_forget(m);
	else
		hmm__launch_stop(m);
	/* After this no callback runs, so the table is ours alone.  (An
	 * inherited subscription is on no list of this process.) */
	hmm_interval_notifier_remove(m->sub);
	if (inherited) {
		m->dev->mirror = NULL;
	} else {
		pthread_mutex_lock(&m->dev->lock);
		m->dev->mirror = NULL;
		pthread_mutex_unlock(&m->dev->lock);
	}
	m->pt_ops->destroy(m->pt);
	hmm__fault_buffer_destroy(&m->faults);
	hmm__advice_destroy(&m->advice);
	pthread_mutex_destroy(&m->lock);
	hmm__free(m);
}

/*
 * Map va to the page at mem with VALID and flags; count it in *mapped if
 * nothing was mapped there.  Context: m->lock held.  Return: as map().
 */
static int install(struct hmm_mirror *m, uint64_t va, void *mem, uint64_t flags,
		   uint64_t *mapped)
{
	uint64_t had = m->pt_ops->lookup(m->pt, va, NULL);
	int err = m->pt_ops->map(m->pt, va, hmm__pte_make((uint64_t)(uintptr_t)mem,
							  HMM__PTE_VALID | flags), 0);

	if (!err && !had)
		(*mapped)++;
	return err;
}

/* Context: m->lock held. */
static void count_mapped(struct hmm_mirror *m, uint64_t mapped)
{
	m->stats.pages_faulted += mapped;
	m->stats.mapped_pages += mapped;
}

/*
 * hmm__mirror_fault_round() (mirror.h): in windows of FAULT_WINDOW pages.
 * Context: m->lock not held.  The windows before a failed one stay mapped.
 */
int hmm__mirror_fault_round(struct hmm_mirror *m, uint64_t start, uint64_t end, bool write)
{
	uint64_t pfns[FAULT_WINDOW];
	uint64_t flags = HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0);

	while (start < end) {
		uint64_t wend = end - start > FAULT_WINDOW * m->page_size
					? start + FAULT_WINDOW * m->page_size : end;
		struct hmm_range range = {
			.notifier = m->sub,
			.start = start,
			.end = wend,
			.hmm_pfns = pfns,
			.default_flags = flags,
			.dev_private_owner = m->dev,
		};
		uint64_t n = (wend - start) / m->page_size, mapped = 0;
		int err;

		for (;;) {
			range.notifier_seq = hmm_interval_read_begin(m->sub);
			err = hmm_range_fault(&range);
			if (err == -EBUSY)
				continue;
			if (err)
				return err;
			pthread_mutex_lock(&m->lock);
			if (!hmm_interval_read_retry(m->sub, range.notifier_seq))
				break;
			pthread_mutex_unlock(&m->lock);
		}
		/* Under the lock, with the snapshot still current. */
		for (uint64_t i = 0; i < n && !err; i++)
			if (pfns[i] & HMM_PFN_VALID)
				err = install(m, start + i * m->page_size, hmm_pfn_to_addr(pfns[i]),
					      pfns[i] & HMM_PFN_WRITE ? HMM__PTE_WRITE : 0, &mapped);
		count_mapped(m, mapped);
		pthread_mutex_unlock(&m->lock);
		if (err)
			return err;
		start = wend;
	}
	return 0;
}

/* Pages an access copies per acquisition of the driver lock. */
#define ACCESS_BATCH 16

/*
 * Copy between the bounce buffer and the nseg pieces of memory in seg
 * (total bytes in all).  System memory (system: some entry maps a page to
 * itself) may be gone behind the entry: unmapped by a system call that
 * libhmm only hears of afterwards (uffd.c), or a page of a mapped file
 * that a truncation took, which nothing reports to libhmm (the kernel's
 * mirrors hear of it from unmap_mapping_range; here any process may
 * truncate the file, at any time).  So the copy goes through
 * process_vm_readv/writev, one call for the batch, which stops with EFAULT
 * where a memcpy would crash the process with SIGBUS or SIGSEGV; the
 * device then faults on that page, and the fault says -EFAULT.  Device
 * memory only: memcpy.
 * Context: m->lock held.  Return: the bytes copied, from the first on.
 */
static size_t copy(const struct iovec *seg, size_t nseg, char *bounce, size_t total,
		   bool write, bool system)
{
	struct iovec local = { bounce, total };
	ssize_t n;

	if (system) {
		do {
			n = write ? process_vm_writev(getpid(), &local, 1, seg, nseg, 0)
				  : process_vm_readv(getpid(), &local, 1, seg, nseg, 0);
		} while (n < 0 && errno == EINTR);
		if (n >= 0)
			return (size_t)n;
		if (errno == EFAULT)
			return 0;
		/* Not allowed here (seccomp): the plain copy, as without the source. */
	}
	HMM_TSAN_IGNORE_BEGIN(); /* the device's access */
	for (size_t i = 0, off = 0; i < nseg; off += seg[i++].iov_len) {
		if (write)
			memcpy(seg[i].iov_base, bounce + off, seg[i].iov_len);
		else
			memcpy(bounce + off, seg[i].iov_base, seg[i].iov_len);
	}
	HMM_TSAN_IGNORE_END();
	return total;
}

/*
 * The device's access to [va, va + len): copy between buf and the pages
 * its table maps, faulting as needed, up to ACCESS_BATCH pages per round.
 */
static int mirror_access(struct hmm_mirror *m, uint64_t va, void *buf, size_t len, bool write)
{
	uint64_t end = va + len, mask;
	size_t bsize;
	char *bounce;
	int err = 0;

	if (!m || (!buf && len) || end < va || end > HMM__VA_LIMIT)
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	mask = m->page_size - 1;
	bsize = ACCESS_BATCH * m->page_size;
	bounce = hmm__malloc(bsize);
	if (!bounce)
		return -ENOMEM;
	hmm__launch_quiesce_self();
	/* A change whose system call has returned has been invalidated. */
	hmm__uffd_sync();
	while (va < end) {
		/* An unaligned batch spans one page more than it holds. */
		struct iovec seg[ACCESS_BATCH + 1];
		size_t want = end - va < bsize ? (size_t)(end - va) : bsize, got = 0, done, nseg = 0;
		bool system = false;

		/* The caller's buffer is touched only without the lock, through
		 * the bounce buffer: it may itself be memory that faults
		 * (anonymous memory on a device), and serving that fault
		 * invalidates. */
		if (write)
			memcpy(bounce, buf, want);
		pthread_mutex_lock(&m->lock);
		while (got < want) {
			uint64_t cur = va + got, page = cur & ~mask;
			uint64_t pte = m->pt_ops->lookup(m->pt, cur, NULL);
			size_t chunk = (size_t)(page + m->page_size - cur);
			char *mem;

			if (!pte || (write && !(pte & HMM__PTE_WRITE)))
				break;
			if (chunk > want - got)
				chunk = want - got;
			mem = (char *)(uintptr_t)(hmm__pte_addr(pte) | (cur & mask));
			/* One piece per run of contiguous memory: the kernel
			 * pins each piece's pages in one go. */
			if (nseg && (char *)seg[nseg - 1].iov_base + seg[nseg - 1].iov_len == mem) {
				seg[nseg - 1].iov_len += chunk;
			} else {
				seg[nseg].iov_base = mem;
				seg[nseg++].iov_len = chunk;
			}
			system |= hmm__pte_addr(pte) == page;
			got += chunk;
		}
		/* Holding the lock: an invalidation waits for this copy. */
		done = got ? copy(seg, nseg, bounce, got, write, system) : 0;
		if (done < got) {
			/* Gone behind the entry (see copy()): the device faults
			 * on it. */
			uint64_t page = (va + done) & ~mask;
			uint64_t dropped = m->pt_ops->unmap(m->pt, page, page + m->page_size);

			m->stats.mapped_pages -= dropped;
			if (dropped)
				shootdown(m);
		}
		pthread_mutex_unlock(&m->lock);
		if (!write)
			memcpy(buf, bounce, done);
		buf = (char *)buf + done;
		va += done;
		if (done == want)
			continue;
		/* A device fault: one round for the rest of the access.  A page
		 * it mapped can still be invalidated before we look again, and
		 * then we fault again, as a device replays a faulting access. */
		err = hmm__mirror_fault(m, va, end, write);
		if (err)
			break;
	}
	hmm__free(bounce);
	return err;
}

HMM_EXPORT int hmm_mirror_read(struct hmm_mirror *m, uint64_t va, void *buf, size_t len)
{
	return mirror_access(m, va, buf, len, false);
}

HMM_EXPORT int hmm_mirror_write(struct hmm_mirror *m, uint64_t va, const void *buf, size_t len)
{
	return mirror_access(m, va, (void *)buf, len, true);
}

HMM_EXPORT int hmm_mirror_stats(struct hmm_mirror *m, struct hmm_mirror_stats *st)
{
	if (!m || !st)
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	pthread_mutex_lock(&m->lock);
	*st = m->stats;
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_lock(&m->faults.lock);
	st->faults = m->faults.queued;
	st->fault_batches = m->faults.batches;
	pthread_mutex_unlock(&m->faults.lock);
	return 0;
}

/*
 * Exclusive access for device atomics (the kernel's make_device_exclusive,
 * as the test driver uses it): the pages become the device's alone
 * (migrate.c) and are mapped with HMM__PTE_EXCLUSIVE, under the sequence
 * protocol so that a CPU access that takes them back in between is seen.
 */
#define EXCLUSIVE_TRIES 64

static int map_exclusive(struct hmm_mirror *m, uint64_t start, uint64_t end)
{
	for (int tries = 0; tries < EXCLUSIVE_TRIES; tries++) {
		uint64_t seq, mapped = 0;
		bool all = true;
		int err = hmm__anon_make_exclusive(m->dev, start, end, NULL);

		if (err)
			return err;
		seq = hmm_interval_read_begin(m->sub);
		pthread_mutex_lock(&m->lock);
		if (hmm_interval_read_retry(m->sub, seq)) {
			pthread_mutex_unlock(&m->lock);
			continue;
		}
		for (uint64_t va = start; va < end && all && !err; va += m->page_size) {
			void *mem = hmm__anon_exclusive_mem(m->dev, va);

			if (!mem) {
				all = false;
				break;
			}
			err = install(m, va, mem, HMM__PTE_WRITE | HMM__PTE_EXCLUSIVE, &mapped);
		}
		count_mapped(m, mapped);
		pthread_mutex_unlock(&m->lock);
		if (err)
			return err;
		if (all)
			return 0;
	}
	return -EBUSY;
}

static bool bad_range(const struct hmm_mirror *m, uint64_t start, uint64_t end)
{
	return !m || end <= start || (start | end) & (m->page_size - 1) || end > HMM__VA_LIMIT;
}

HMM_EXPORT int hmm_make_device_exclusive(struct hmm_mirror *m, uint64_t start, uint64_t end)
{
	if (bad_range(m, start, end))
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	hmm__launch_quiesce_self();
	return map_exclusive(m, start, end);
}

HMM_EXPORT int hmm_mirror_check_exclusive(struct hmm_mirror *m, uint64_t start, uint64_t end)
{
	int err = 0;

	if (bad_range(m, start, end))
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	pthread_mutex_lock(&m->lock);
	for (uint64_t va = start; va < end && !err; va += m->page_size)
		if (!(m->pt_ops->lookup(m->pt, va, NULL) & HMM__PTE_EXCLUSIVE))
			err = -EPERM;
	pthread_mutex_unlock(&m->lock);
	return err;
}

HMM_EXPORT int hmm_mirror_atomic_add_u64(struct hmm_mirror *m, uint64_t va, uint64_t v,
					 uint64_t *old)
{
	uint64_t page;

	if (!m || (va & 7) || va >= HMM__VA_LIMIT)
		return -EINVAL;
	if (hmm__inherited(m->dev))
		return -ENODEV;
	page = va & ~(m->page_size - 1);
	hmm__launch_quiesce_self();
	for (int tries = 0; tries < EXCLUSIVE_TRIES; tries++) {
		struct hmm__exclusive_add add = { .va = va, .v = v };
		uint64_t pte, o;
		int err;

		pthread_mutex_lock(&m->lock);
		pte = m->pt_ops->lookup(m->pt, va, NULL);
		if (pte & HMM__PTE_EXCLUSIVE) {
			/* Holding the lock: taking the page back waits for this. */
			uint64_t *word = (uint64_t *)(uintptr_t)(hmm__pte_addr(pte) |
							      (va & (m->page_size - 1)));

			o = __atomic_fetch_add(word, v, __ATOMIC_SEQ_CST);
			pthread_mutex_unlock(&m->lock);
			if (old)
				*old = o;
			return 0;
		}
		pthread_mutex_unlock(&m->lock);
		/* An atomic fault: take the page exclusive, then replay.  Even if
		 * the CPU takes the page back before it is mapped, the atomic is
		 * done once on the page while it is held, so it always ends. */
		err = hmm__anon_make_exclusive(m->dev, page, page + m->page_size, &add);
		if (err)
			return err;
		if (add.done) {
			map_exclusive(m, page, page + m->page_size); /* for the next ones */
			if (old)
				*old = add.old;
			return 0;
		}
	}
	return -EBUSY;
}
