/* SPDX-License-Identifier: MIT */
/*
 * range.c - range fault: a snapshot of the CPU's page table over a range,
 * faulting pages in first where asked (the kernel's hmm_range_fault).
 *
 * User space cannot walk its own page table, but the kernel describes it:
 *
 *   what                         where it comes from
 *   ---------------------------  ---------------------------------------------
 *   the mappings (VMAs)          PROCMAP_QUERY on /proc/self/maps (6.11+), or
 *                                parsing /proc/self/maps
 *   present, zero page, THP      PAGEMAP_SCAN on /proc/self/pagemap (6.7+), or
 *   page-cache/shared page       pread of /proc/self/pagemap (bits 63, 61)
 *   exclusively mapped           pread of /proc/self/pagemap (bit 56)
 *   faulting in                  madvise(MADV_POPULATE_READ / _WRITE) (5.14+)
 *
 * What the kernel reads under the page table lock we read without any lock,
 * so a snapshot can be stale the moment it is taken.  That is what the
 * notifier's sequence number is for: whoever changes the address space
 * invalidates the subscription first, and hmm_interval_check_retry() here
 * (and hmm_interval_read_retry() under the driver lock, later) catches it.
 *
 * The walk is the kernel's: outputs are written in address order; when a
 * page needs a fault, the run of consecutive pages needing the same kind of
 * fault is populated with one madvise() and the walk resumes at the run's
 * first page.  A word of hmm_pfns is overwritten only once its page needs no
 * more faulting, so a run's requests are still there when it is looked at
 * again.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Debian 12 ships 6.1 kernel headers: PROCMAP_QUERY (6.11) and PAGEMAP_SCAN
 * (6.7) are defined here with their uapi layouts.  Both structs carry their
 * own size, so a newer kernel accepts this older layout.
 */
struct hmm__procmap_query {
	uint64_t size;
	uint64_t query_flags;
	uint64_t query_addr;
	uint64_t vma_start;
	uint64_t vma_end;
	uint64_t vma_flags;
	uint64_t vma_page_size;
	uint64_t vma_offset;
	uint64_t inode;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint32_t vma_name_size;
	uint32_t build_id_size;
	uint64_t vma_name_addr;
	uint64_t build_id_addr;
};
#define Q_VMA_READABLE 0x01
#define Q_VMA_WRITABLE 0x02
#define Q_VMA_SHARED 0x08
#define Q_COVERING_OR_NEXT_VMA 0x10
#define HMM__PROCMAP_QUERY _IOWR('f', 17, struct hmm__procmap_query)

struct hmm__page_region {
	uint64_t start;
	uint64_t end;
	uint64_t categories;
};

struct hmm__pm_scan_arg {
	uint64_t size;
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;
	uint64_t vec;
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};
#define CAT_FILE (1ULL << 2)
#define CAT_PRESENT (1ULL << 3)
#define CAT_PFNZERO (1ULL << 5)
#define CAT_HUGE (1ULL << 6)
#define HMM__PAGEMAP_SCAN _IOWR('f', 16, struct hmm__pm_scan_arg)

/* Bits of a /proc/self/pagemap word (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ULL << 63)
#define PM_FILE (1ULL << 61)
#define PM_SWAP (1ULL << 62)
#define PM_EXCLUSIVE (1ULL << 56)

/* What the walk knows about one page, from pagemap. */
#define PG_PRESENT 0x01
#define PG_ZERO 0x02 /* the shared zero page (or huge zero page) */
#define PG_HUGE 0x04 /* inside a PMD-mapped THP or a hugetlb page */
#define PG_FILE 0x08 /* page cache or shared anonymous (shmem) page */
#define PG_EXCL 0x10 /* mapped by this process only */
#define PG_SWAP 0x20 /* swapped out (read only with want_words) */

/* Pages looked at per PAGEMAP_SCAN / pread: one PMD's worth, 4 KiB of words. */
#define CHUNK 512
/* Consecutive faults of the same page without progress before giving up. */
#define MAX_FAULT_TRIES 16

/* The fallbacks forced by hmm__range_force_fallback (hmm-internal.h). */
static unsigned fallback_mask;

void hmm__range_force_fallback(unsigned mask)
{
	__atomic_store_n(&fallback_mask, mask, __ATOMIC_RELAXED);
}

struct vma {
	uint64_t start, end;
	uint64_t page_size; /* the mapping's page size (hugetlb), else the base page */
	bool read, write, shared;
	bool special;       /* VM_IO / VM_PFNMAP as far as we can tell: no pages */
	bool file;          /* backed by a file (or shmem): not anonymous */
	uint64_t pgoff;     /* the file offset at start, bytes */
	uint32_t dev_major, dev_minor;
	uint64_t ino;
	const char *name;   /* valid until the next vma_find */
};

struct walk {
	struct hmm_range *range;
	size_t page_size;
	unsigned page_shift;
	int maps_fd;     /* /proc/self/maps */
	int pagemap_fd;  /* /proc/self/pagemap */
	bool no_query;   /* PROCMAP_QUERY unavailable: parse maps_fd */
	bool no_scan;    /* PAGEMAP_SCAN unavailable: pread only */
	char *maps_buf;  /* the fallback's copy of /proc/self/maps */
	size_t maps_len, maps_cap;
	uint64_t fault_addr;  /* where the last fault was, for MAX_FAULT_TRIES */
	unsigned fault_tries;
	bool want_words;      /* read pagemap words for every mapping (snapshot) */
	/* Large enough for any name: a shorter buffer fails with ENAMETOOLONG. */
	char name[PATH_MAX + 32];
};

/* Mappings that have no struct page behind them: the kernel's VM_IO/VM_PFNMAP. */
static bool special_name(const char *name)
{
	return !strcmp(name, "[vvar]") || !strcmp(name, "[vvar_vclock]") ||
	       !strcmp(name, "[vsyscall]");
}

/* Read all of /proc/self/maps again.  Return: 0, -ENOMEM, -errno. */
static int maps_reload(struct walk *w)
{
	w->maps_len = 0;
	if (lseek(w->maps_fd, 0, SEEK_SET) < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (w->maps_cap - w->maps_len < 4096) {
			size_t cap = w->maps_cap ? w->maps_cap * 2 : 65536;
			char *buf = hmm__realloc(w->maps_buf, cap);

			if (!buf)
				return -ENOMEM;
			w->maps_buf = buf;
			w->maps_cap = cap;
		}
		n = read(w->maps_fd, w->maps_buf + w->maps_len, w->maps_cap - w->maps_len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		w->maps_len += (size_t)n;
	}
	w->maps_buf[w->maps_len] = '\0';
	return 0;
}

/*
 * The fallback: the first line of /proc/self/maps whose mapping ends above
 * addr.  Each query rereads the file, so that mappings changed by a fault
 * (none should be, but a racing thread may) are seen.
 * Return: 0 with *v set, -ENOENT if no mapping ends above addr, -errno.
 */
static int vma_parse(struct walk *w, uint64_t addr, struct vma *v)
{
	int err = maps_reload(w);
	char *line = w->maps_buf;

	if (err)
		return err;
	while (line && *line) {
		char *next = strchr(line, '\n');
		unsigned long long start, end, pgoff = 0, inode = 0;
		unsigned major = 0, minor = 0;
		char perms[5];
		int name_at = 0;

		if (next)
			*next++ = '\0';
		if (sscanf(line, "%llx-%llx %4s %llx %x:%x %llu %n", &start, &end, perms, &pgoff,
			   &major, &minor, &inode, &name_at) >= 3 && end > addr) {
			const char *name = name_at ? line + name_at : "";

			v->start = start;
			v->end = end;
			v->page_size = w->page_size;
			v->read = perms[0] == 'r';
			v->write = perms[1] == 'w';
			v->shared = perms[3] == 's';
			v->special = special_name(name);
			v->file = inode != 0;
			v->pgoff = pgoff;
			v->dev_major = major;
			v->dev_minor = minor;
			v->ino = inode;
			v->name = name;
			return 0;
		}
		line = next;
	}
	return -ENOENT;
}

/*
 * vma_find() - the mapping that contains addr or, if none does, the next one.
 * Return: 0 with *v set, -ENOENT if there is no mapping at or above addr,
 * -errno if /proc/self/maps cannot be read.
 */
static int vma_find(struct walk *w, uint64_t addr, struct vma *v)
{
	char *name = w->name;
	struct hmm__procmap_query q;

	if (w->no_query)
		return vma_parse(w, addr, v);
	memset(&q, 0, sizeof(q));
	q.size = sizeof(q);
	q.query_flags = Q_COVERING_OR_NEXT_VMA;
	q.query_addr = addr;
	q.vma_name_addr = (uint64_t)(uintptr_t)name;
	q.vma_name_size = sizeof(w->name);
	if (ioctl(w->maps_fd, HMM__PROCMAP_QUERY, &q) < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		if (errno != ENOTTY && errno != EINVAL)
			return -errno;
		w->no_query = true;
		return vma_parse(w, addr, v);
	}
	if (q.vma_name_size == 0)
		name[0] = '\0';
	v->start = q.vma_start;
	v->end = q.vma_end;
	v->page_size = q.vma_page_size ? q.vma_page_size : w->page_size;
	v->read = q.vma_flags & Q_VMA_READABLE;
	v->write = q.vma_flags & Q_VMA_WRITABLE;
	v->shared = q.vma_flags & Q_VMA_SHARED;
	v->special = special_name(name);
	v->file = q.inode != 0;
	v->pgoff = q.vma_offset;
	v->dev_major = q.dev_major;
	v->dev_minor = q.dev_minor;
	v->ino = q.inode;
	v->name = name;
	return 0;
}

/* Read n pagemap words from page address addr.  Return: 0, -errno. */
static int pagemap_read(struct walk *w, uint64_t addr, uint64_t *words, size_t n)
{
	size_t want = n * sizeof(*words), got = 0;

	while (got < want) {
		ssize_t r = pread(w->pagemap_fd, (char *)words + got, want - got,
				  (off_t)((addr >> w->page_shift) * sizeof(*words) + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EFAULT;
		got += (size_t)r;
	}
	return 0;
}

/*
 * pages_read() - what pagemap says about the n pages from addr, all inside v.
 * PAGEMAP_SCAN gives presence, the zero page and THPs in a few regions;
 * exclusivity is only in the pagemap words, which are read only when it
 * matters (a private writable mapping) or when PAGEMAP_SCAN is missing.
 * Return: 0, -errno.
 */
static int pages_read(struct walk *w, const struct vma *v, uint64_t addr, size_t n,
		      uint8_t *pg)
{
	uint64_t words[CHUNK];
	bool need_words = (!v->shared && v->write) || w->want_words;
	int err;

	memset(pg, 0, n);
	if (!w->no_scan) {
		struct hmm__page_region regions[32];
		struct hmm__pm_scan_arg a;
		uint64_t at = addr, end = addr + ((uint64_t)n << w->page_shift);

		while (at < end) {
			long got;

			memset(&a, 0, sizeof(a));
			a.size = sizeof(a);
			a.start = at;
			a.end = end;
			a.vec = (uint64_t)(uintptr_t)regions;
			a.vec_len = sizeof(regions) / sizeof(regions[0]);
			a.category_anyof_mask = CAT_PRESENT;
			a.return_mask = CAT_PRESENT | CAT_PFNZERO | CAT_HUGE | CAT_FILE;
			got = ioctl(w->pagemap_fd, HMM__PAGEMAP_SCAN, &a);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0 && (errno == ENOTTY || errno == EINVAL) && at == addr) {
				w->no_scan = true;
				break;
			}
			if (got < 0)
				return -errno;
			for (long r = 0; r < got; r++) {
				uint8_t f = PG_PRESENT;

				if (regions[r].categories & CAT_PFNZERO)
					f |= PG_ZERO;
				if (regions[r].categories & CAT_HUGE)
					f |= PG_HUGE;
				if (regions[r].categories & CAT_FILE)
					f |= PG_FILE;
				for (uint64_t p = regions[r].start; p < regions[r].end;
				     p += w->page_size)
					pg[(p - addr) >> w->page_shift] = f;
			}
			if (a.walk_end <= at)
				return -EFAULT;
			at = a.walk_end;
		}
	}
	if (!need_words && !w->no_scan)
		return 0;
	err = pagemap_read(w, addr, words, n);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		if (w->no_scan) {
			/*
			 * Without PAGEMAP_SCAN the zero page and THPs are
			 * invisible (the PFN reads as 0 unprivileged).  The zero
			 * page is never exclusive, so it still reads as not
			 * writable; the order is reported as 0.
			 */
			pg[i] = 0;
			if (words[i] & PM_PRESENT)
				pg[i] |= PG_PRESENT;
			if (words[i] & PM_FILE)
				pg[i] |= PG_FILE;
		}
		if ((words[i] & PM_EXCLUSIVE) && (pg[i] & PG_PRESENT))
			pg[i] |= PG_EXCL;
		if ((words[i] & PM_SWAP) && !(pg[i] & PG_PRESENT))
			pg[i] |= PG_SWAP;
	}
	return 0;
}

/* log2 of the mapping's size in base pages, for HMM_PFN_ORDER. */
static uint64_t map_order(const struct walk *w, const struct vma *v, uint8_t pg)
{
	unsigned order = 0;

	if (v->page_size > w->page_size) {
		while (((uint64_t)w->page_size << order) < v->page_size)
			order++;
	} else if (pg & PG_HUGE) {
		order = 9; /* a PMD-mapped THP */
	}
	return (uint64_t)order << HMM_PFN_ORDER_SHIFT;
}

/* The request for page i: (word & mask) | defaults, REQ_WRITE implying REQ_FAULT. */
static uint64_t page_req(const struct hmm_range *range, size_t i)
{
	uint64_t req = (range->hmm_pfns[i] & range->pfn_flags_mask) | range->default_flags;

	req &= HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE;
	if (req & HMM_PFN_REQ_WRITE)
		req |= HMM_PFN_REQ_FAULT;
	return req;
}

/* Is the page writable through the CPU mapping, without a fault? */
static bool page_writable(const struct vma *v, uint8_t pg)
{
	if (!v->write || !(pg & PG_PRESENT) || (pg & PG_ZERO))
		return false;
	if (v->shared)
		return true;
	/*
	 * Private: only an anonymous page mapped by us alone.  A page-cache
	 * page of a private file mapping is exclusive when nobody else maps
	 * it, yet a write would copy it.
	 */
	return (pg & PG_EXCL) && !(pg & PG_FILE);
}

/* Fault [addr, addr + len) in.  Return: 0, -EFAULT. */
static int populate(uint64_t addr, uint64_t len, bool write)
{
	int advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;

	while (madvise((void *)(uintptr_t)addr, len, advice) < 0) {
		if (errno == EINTR || errno == EAGAIN)
			continue;
		/*
		 * EFAULT: a page could not be faulted in; ENOMEM: the range
		 * was unmapped meanwhile (or memory ran out, which madvise
		 * does not tell apart); EINVAL/EPERM: VM_PFNMAP or VM_IO.
		 */
		return -EFAULT;
	}
	return 0;
}

/* Every page of [i, j) gets HMM_PFN_ERROR, or -EFAULT if one asks a fault. */
static int fill_error(struct walk *w, size_t i, size_t j)
{
	struct hmm_range *range = w->range;

	for (size_t k = i; k < j; k++)
		if (page_req(range, k))
			return -EFAULT;
	for (size_t k = i; k < j; k++)
		range->hmm_pfns[k] = HMM_PFN_ERROR;
	return 0;
}

/*
 * walk_vma() - pages [i, j) of the range, all inside mapping v.
 * Return: 0 when every page has its output; 1 if pages were faulted in and
 * the walk must go on from *resume; -errno.
 */
static int walk_vma(struct walk *w, const struct vma *v, size_t i, size_t j, size_t *resume)
{
	struct hmm_range *range = w->range;
	bool anon = hmm__anon_any() && !v->shared;
	/* A shared mapping of a file that may lie on an attached device. */
	bool attached = v->shared && v->file && hmm__attached_any();
	struct hmm__attached_vma av = { v->start, v->end, v->pgoff, v->dev_major,
					v->dev_minor, v->ino, v->write, v->name };
	uint64_t on_dev[CHUNK];
	uint8_t pg[CHUNK];

	if (!v->read || v->special)
		return fill_error(w, i, j);
	/* A file of an hmmfs mount: hear of the daemon's changes to it. */
	if (v->file)
		hmm__observe(&av);
	for (size_t c = i; c < j; c += CHUNK) {
		size_t n = j - c < CHUNK ? j - c : CHUNK;
		uint64_t base = range->start + ((uint64_t)c << w->page_shift);
		int err = pages_read(w, v, base, n, pg);

		if (!err && attached)
			err = hmm__attached_lookup(range->dev_private_owner, &av, base, n, on_dev);
		if (err)
			return err;
		for (size_t k = 0; k < n; k++) {
			uint64_t addr = base + ((uint64_t)k << w->page_shift);
			uint64_t req = page_req(range, c + k), out;
			bool write = req & HMM_PFN_REQ_WRITE;
			size_t run;

			if (write && !v->write)
				return -EPERM;
			if (attached && on_dev[k]) {
				/* On the attached device: present for it, as the
				 * kernel's device-private pages are for their owner. */
				range->hmm_pfns[c + k] = on_dev[k];
				continue;
			}
			if (anon) {
				/* Anonymous memory on a device has no CPU page, and
				 * a page being migrated must not be mapped even if
				 * its CPU page is still there. */
				int found = hmm__anon_lookup(range->dev_private_owner, addr, &out);

				if (found < 0)
					return found;
				if (found) {
					if (v->write)
						out |= HMM_PFN_WRITE;
					range->hmm_pfns[c + k] = out;
					continue;
				}
			}
			if ((req && !(pg[k] & PG_PRESENT)) ||
			    (write && !page_writable(v, pg[k])))
				goto fault;
			if (!(pg[k] & PG_PRESENT)) {
				range->hmm_pfns[c + k] = 0;
				continue;
			}
			out = HMM_PFN_VALID | map_order(w, v, pg[k]) | (addr >> 12);
			if (page_writable(v, pg[k]))
				out |= HMM_PFN_WRITE;
			if (pg[k] & PG_ZERO)
				out |= HMM_PFN_ZERO;
			range->hmm_pfns[c + k] = out;
			continue;
fault:
			/*
			 * The run: the following pages of this chunk that need
			 * the same kind of fault.  Beyond the chunk we do not
			 * know; the next round finds out.
			 */
			for (run = k + 1; run < n; run++) {
				uint64_t r = page_req(range, c + run);

				if ((r & HMM_PFN_REQ_WRITE) != (req & HMM_PFN_REQ_WRITE))
					break;
				if (write && page_writable(v, pg[run]))
					break;
				if (!write && (!r || (pg[run] & PG_PRESENT)))
					break;
			}
			if (hmm_interval_check_retry(range->notifier, range->notifier_seq))
				return -EBUSY;
			if (w->fault_addr == addr) {
				if (++w->fault_tries > MAX_FAULT_TRIES)
					return -EFAULT;
			} else {
				w->fault_addr = addr;
				w->fault_tries = 1;
			}
			err = populate(addr, (uint64_t)(run - k) << w->page_shift, write);
			if (err)
				return err;
			*resume = c + k;
			return 1;
		}
	}
	return 0;
}

/*
 * Have the changes of mapping v reported from now on, by the userfaultfd
 * event source (uffd.c) when libhmm.so has one: a raw munmap or free() of
 * memory a device mirrors must invalidate it.  Private anonymous memory
 * only (see the top of uffd.c).
 */
static void watch(const struct vma *v)
{
	const struct hmm__uffd_source *s = __atomic_load_n(&hmm__uffd_source, __ATOMIC_ACQUIRE);

	if (s && v->read && !v->special && !v->file && !v->shared)
		s->watch(v->start, v->end);
}

/*
 * walk_from() - fill the outputs from page i on.
 * Return: 0 when done; 1 if pages were faulted in and the walk must go on
 * from *resume; -errno.
 */
static int walk_from(struct walk *w, size_t i, size_t *resume)
{
	struct hmm_range *range = w->range;
	size_t npages = (range->end - range->start) >> w->page_shift;

	while (i < npages) {
		uint64_t addr = range->start + ((uint64_t)i << w->page_shift);
		struct vma v;
		size_t j;
		int err = vma_find(w, addr, &v);

		if (err == -ENOENT) {
			return fill_error(w, i, npages);
		} else if (err) {
			return err;
		} else if (v.start > addr) {
			/* A hole up to the next mapping. */
			j = v.start >= range->end ? npages
						  : (v.start - range->start) >> w->page_shift;
			err = fill_error(w, i, j);
		} else {
			j = v.end >= range->end ? npages
						: (v.end - range->start) >> w->page_shift;
			watch(&v);
			err = walk_vma(w, &v, i, j, resume);
		}
		if (err)
			return err;
		i = j;
	}
	return 0;
}

/* Set up a walk: /proc/self/maps and pagemap open.  Return: 0, -errno. */
static int walk_open(struct walk *w, size_t page_size)
{
	unsigned force = __atomic_load_n(&fallback_mask, __ATOMIC_RELAXED);

	memset(w, 0, sizeof(*w));
	w->page_size = page_size;
	w->page_shift = (unsigned)__builtin_ctzl((unsigned long)page_size);
	w->no_query = force & 1;
	w->no_scan = force & 2;
	w->maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (w->maps_fd < 0)
		return -errno;
	w->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (w->pagemap_fd < 0) {
		int err = -errno;

		close(w->maps_fd);
		return err;
	}
	return 0;
}

static void walk_close(struct walk *w)
{
	hmm__free(w->maps_buf);
	close(w->pagemap_fd);
	close(w->maps_fd);
}

/**
 * hmm_range_fault() - fill range->hmm_pfns from the CPU's page table,
 * faulting pages in where the requests ask.
 *
 * /proc/self/maps and /proc/self/pagemap are opened on every call, which
 * costs about 9 us (measured here; a whole call on 1024 present pages takes
 * about 85 us): a cached descriptor would describe the parent after fork(),
 * and caching per pid breaks when a pid is reused.
 *
 * Context: no driver lock held: it faults pages in and may sleep.
 * Return: 0; -EBUSY (hmm_interval_check_retry() says the range was
 * invalidated, before a fault or after the snapshot); -EFAULT (a fault
 * asked on a page with no usable mapping, or the fault failed); -EPERM (a
 * write asked on a mapping without write permission); -EINVAL (NULL range,
 * notifier or hmm_pfns, misaligned or empty range, a range the notifier's
 * does not contain); -ENOMEM; another
 * -errno if /proc/self cannot be read.
 */
HMM_EXPORT int hmm_range_fault(struct hmm_range *range)
{
	struct walk w;
	long ps = sysconf(_SC_PAGESIZE);
	size_t i = 0;
	int err;

	if (!range || !range->notifier || !range->hmm_pfns || range->end <= range->start ||
	    ps <= 0 || (range->start | range->end) & (uint64_t)(ps - 1))
		return -EINVAL;
	if (!hmm__interval_covers(range->notifier, range->start, range->end))
		return -EINVAL;
	/* A change whose system call has returned is invalidated first: its
	 * userfaultfd event may still be on its way to the notifiers. */
	hmm__uffd_sync();
	err = walk_open(&w, (size_t)ps);
	if (err)
		return err;
	w.range = range;
	do {
		if (hmm_interval_check_retry(range->notifier, range->notifier_seq)) {
			err = -EBUSY;
			break;
		}
		err = walk_from(&w, i, &i);
	} while (err == 1);
	if (!err && hmm_interval_check_retry(range->notifier, range->notifier_seq))
		err = -EBUSY;
	walk_close(&w);
	return err;
}

struct not_anon {
	uint64_t start;
	unsigned page_shift;
	uint8_t *out;
};

/* libhmm's own memory is not the program's to migrate: alloc.c's callback. */
static void not_anon(void *arg, uint64_t s, uint64_t e)
{
	const struct not_anon *a = arg;

	for (uint64_t va = s; va < e; va += (uint64_t)1 << a->page_shift)
		a->out[(va - a->start) >> a->page_shift] &= (uint8_t)~HMM__SNAP_ANON;
}

/*
 * hmm__snapshot() - what migration needs to know about the n pages from
 * start (hmm-internal.h): one byte of HMM__SNAP_* flags per page.
 * Return: 0, -ENOMEM, or another -errno if /proc/self cannot be read.
 */
int hmm__snapshot(uint64_t start, size_t n, uint8_t *out)
{
	long ps = sysconf(_SC_PAGESIZE);
	uint64_t end = start + (uint64_t)n * (uint64_t)ps;
	uint8_t pg[CHUNK];
	struct walk w;
	int err = 0;

	memset(out, 0, n);
	err = walk_open(&w, (size_t)ps);
	if (err)
		return err;
	w.want_words = true;
	for (uint64_t addr = start; addr < end;) {
		struct vma v;
		uint64_t stop;

		err = vma_find(&w, addr, &v);
		if (err == -ENOENT) {
			err = 0;
			break;
		}
		if (err)
			break;
		if (v.start > addr) {
			addr = v.start;
			continue;
		}
		stop = v.end < end ? v.end : end;
		while (addr < stop) {
			size_t i = (size_t)((addr - start) >> w.page_shift);
			size_t k = (size_t)((stop - addr) >> w.page_shift);
			uint8_t base = HMM__SNAP_MAPPED;

			if (k > CHUNK)
				k = CHUNK;
			if (v.read)
				base |= HMM__SNAP_READ;
			if (v.write)
				base |= HMM__SNAP_WRITE;
			if (!v.shared && !v.file && !v.special && v.page_size == w.page_size)
				base |= HMM__SNAP_ANON;
			if (v.read && !v.special) {
				err = pages_read(&w, &v, addr, k, pg);
				if (err)
					goto out;
			} else {
				memset(pg, 0, k);
			}
			for (size_t j = 0; j < k; j++) {
				uint8_t f = base;

				if (pg[j] & PG_PRESENT)
					f |= HMM__SNAP_PRESENT;
				if (pg[j] & PG_ZERO)
					f |= HMM__SNAP_ZERO;
				if (pg[j] & PG_EXCL)
					f |= HMM__SNAP_EXCL;
				if (pg[j] & PG_SWAP)
					f |= HMM__SNAP_SWAP;
				out[i + j] = f;
			}
			addr += (uint64_t)k << w.page_shift;
		}
	}
out:
	walk_close(&w);
	if (!err)
		hmm__alloc_own_ranges(start, end, not_anon, &(struct not_anon){ start, w.page_shift, out });
	return err;
}
