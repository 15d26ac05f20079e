/* SPDX-License-Identifier: MIT */
/*
 * A regular file's data: pages of fs->page_size indexed by page number in
 * a radix tree of struct hmm__page, each living in host RAM or on a device
 * (libhmm/residency.c).  A page that is not in the tree is a hole: it reads
 * as zeros and holds no memory anywhere.
 *
 * The CPU may touch a page in host RAM or on a coherent device in place.  A
 * page on a private device must come back to host RAM first: every function
 * here that reads or writes page contents does that, so the READ, WRITE and
 * size-changing paths are where a CPU access faults a page back.
 *
 * Coherence.  The CPU's "in place" is a copy: a READ fills the kernel's page
 * cache from device memory, and stores through a mapping stay there until
 * written back, while an attached device reads and writes the device
 * memory itself.  The kernel's coherent device memory is one copy; here a
 * page on a device is either copied by the CPU (cpu_copy: a READ or a
 * write(2) put it in the page cache) or used in place by the device that
 * holds it, never both:
 *  - before a READ or a write(2) gives the CPU a copy of a page on a
 *    device, the sessions drop their device mappings of it
 *    (hmmfs_pages_unshare, as for a private page's fault-back); the page
 *    is then cpu_copy;
 *  - HMM_IOC_DEVICE_PAGES hands out only pages that are not cpu_copy: for
 *    the others the device goes through the CPU's mapping, so the CPU's
 *    copy;
 *  - a migration to a coherent device takes the CPU's copies of the pages
 *    already there too (migrate.c), which clears cpu_copy.
 * A session may use a page in place only once handed out (in_place), so
 * the sessions are told before a page changes hands only if it was: a
 * device going through the CPU's mapping, which holds its driver lock
 * while the CPU's access waits for this READ or WRITE, is not asked to
 * answer meanwhile.
 * The flag means nothing for pages in host RAM: any migration takes them
 * from the CPU first.
 *
 * Invariants: no page lies wholly at or beyond the size (truncation frees
 * them), and the bytes of the last page beyond the size are zero, so that
 * growing the file again exposes zeros.
 *
 * Context for every function here: the caller holds f->data_lock, for
 * writing unless the function says otherwise.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static uint64_t in_page(uint64_t off)
{
	return off & (hmmfs.page_size - 1);
}

static bool cpu_can_touch(const struct hmm__page *pg)
{
	return pg->loc == HMM__LOC_HOST ||
	       hmmfs.devices[pg->loc]->type == HMM__DEVICE_COHERENT;
}

static void free_page(void *page, void *arg)
{
	hmm__page_free(&hmmfs.mem, page);
}

uint64_t hmmfs_pages_count(struct hmmfs_inode *f)
{
	return f->file.pages.count;
}

/*
 * hmmfs_pages_move() - move n pages of f to dest (libhmm's
 * hmm__pages_move) and count it in f's counters.
 * Return: 0, -ENOSPC, -ENOMEM; nothing moved on error.
 */
int hmmfs_pages_move(struct hmmfs_inode *f, struct hmm__page **pages, size_t n, int dest)
{
	int err = hmm__pages_move(&hmmfs.mem, pages, n, dest);

	if (err)
		return err;
	if (dest == HMM__LOC_HOST)
		f->file.pages_to_host += n;
	else
		f->file.pages_to_device += n;
	return 0;
}

/* Pages brought back to host RAM by one CPU fault, at most. */
#define FAULT_BATCH 256

/*
 * Bring n pages on private devices back to host RAM for the CPU (a CPU
 * fault), counting it for the file and for each page's device.
 * Return: 0, -ENOSPC (host RAM full), -ENOMEM; nothing moved on error.
 */
static int fault_back(struct hmmfs_inode *f, struct hmm__page **pages, size_t n)
{
	int16_t from[FAULT_BATCH];
	int err;

	HMM_ASSERT(n <= FAULT_BATCH);
	for (size_t i = 0; i < n; i++)
		from[i] = pages[i]->loc;
	err = hmmfs_pages_move(f, pages, n, HMM__LOC_HOST);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++)
		__atomic_add_fetch(&hmmfs.devices[from[i]]->counters.cpu_faults, 1,
				   __ATOMIC_RELAXED);
	f->file.cpu_faults += n;
	return 0;
}

/*
 * A CPU access to a page being migrated keeps it where it is (see
 * migrate.c) -- except the write-back that taking the page from the CPU
 * causes, which must land in the page's current memory and let it move.
 */
static void cpu_touched(struct hmm__page *pg, bool writeback)
{
	if (pg->state == HMM__PAGE_MOVING && !writeback)
		pg->state = HMM__PAGE_STABLE;
}

/* The page at index for the CPU to touch, or NULL for a hole. */
static int page_for_cpu(struct hmmfs_inode *f, uint64_t index, bool writeback,
			struct hmm__page **out)
{
	struct hmm__page *pg = hmm__radix_lookup(&f->file.pages, index);
	int err = 0;

	if (pg) {
		cpu_touched(pg, writeback);
		if (!cpu_can_touch(pg))
			err = fault_back(f, &pg, 1);
		else
			hmm__page_touch(&hmmfs.mem, pg);
	}
	*out = pg;
	return err;
}

/*
 * The page at index, allocated if it is a hole, ready for the CPU to write.
 * A new page is zeroed unless the caller overwrites all of it (whole).
 */
static int page_get(struct hmmfs_inode *f, uint64_t index, bool whole, bool writeback,
		    struct hmm__page **out)
{
	struct hmm__page *pg;
	int err = page_for_cpu(f, index, writeback, &pg);

	if (err)
		return err;
	if (!pg) {
		err = hmm__page_new(&hmmfs.mem, whole, f, index, &pg);
		if (err)
			return err;
		err = hmm__radix_insert(&f->file.pages, index, pg);
		if (err) {
			hmm__page_free(&hmmfs.mem, pg);
			return err;
		}
	}
	*out = pg;
	return 0;
}

/*
 * hmmfs_pages_need_fault() - must the CPU's read of [off, off + size) change
 * a page first: bring it back from a private device, stop its migration,
 * or take a coherent device's page from the device that uses it in place
 * (see the top)?
 * Context: data_lock held for reading suffices.
 */
bool hmmfs_pages_need_fault(struct hmmfs_inode *f, uint64_t off, size_t size)
{
	uint64_t index = page_index(off), last;
	struct hmm__page *pg;

	if (!hmmfs.ndevices || !size || off >= f->file.size)
		return false;
	last = page_index(off + size - 1);
	while ((pg = hmm__radix_next(&f->file.pages, &index)) && index <= last) {
		if (!cpu_can_touch(pg) || pg->state == HMM__PAGE_MOVING ||
		    (pg->loc != HMM__LOC_HOST && !pg->cpu_copy))
			return true;
		index++;
	}
	return false;
}

/*
 * hmmfs_pages_fault_in() - ready the range for the CPU to copy: bring every
 * private-device page back to host RAM, one DMA batch per device
 * (hmm__pages_move groups them), so that pages the kernel reads ahead
 * together come back together, and mark every page cpu_copy.
 * Context: the sessions' device mappings of the range are gone
 * (hmmfs_pages_unshare).
 * Return: 0, -ENOSPC (host RAM full), -ENOMEM.
 */
int hmmfs_pages_fault_in(struct hmmfs_inode *f, uint64_t off, size_t size)
{
	struct hmm__page *batch[FAULT_BATCH];
	uint64_t index, last;
	struct hmm__page *pg;
	size_t n = 0;
	int err = 0;

	if (!size || off >= f->file.size)
		return 0;
	last = page_index(off + size - 1);
	index = page_index(off);
	while (!err && (pg = hmm__radix_next(&f->file.pages, &index)) && index <= last) {
		cpu_touched(pg, false);
		/* A private page is in host RAM once copied (the flag then
		 * means nothing); one that cannot come back is not copied. */
		if (!cpu_can_touch(pg))
			batch[n++] = pg;
		else
			pg->cpu_copy = true;
		if (n == FAULT_BATCH) {
			err = fault_back(f, batch, n);
			n = 0;
		}
		index++;
	}
	if (!err && n)
		err = fault_back(f, batch, n);
	return err;
}

/*
 * hmmfs_pages_write() - copy buf into the file at off, allocating pages;
 * writeback says the kernel is writing back a dirty page-cache page.
 * A write that runs out of memory part way is short: *written says how much
 * landed, and the error is returned only if nothing did.
 * Return: 0, -ENOSPC (host_mem full), -ENOMEM.
 */
int hmmfs_pages_write(struct hmmfs_inode *f, const char *buf, size_t size,
		      uint64_t off, bool writeback, size_t *written)
{
	size_t done = 0;
	int err = 0;

	while (done < size) {
		uint64_t pos = off + done;
		size_t chunk = hmmfs.page_size - in_page(pos);
		struct hmm__page *pg;

		if (chunk > size - done)
			chunk = size - done;
		err = page_get(f, page_index(pos), chunk == hmmfs.page_size, writeback, &pg);
		if (err)
			break;
		/* write(2) leaves the data in the page cache too; a write-back
		 * comes from a copy already counted (or being taken). */
		if (!writeback)
			pg->cpu_copy = true;
		memcpy((char *)pg->data + in_page(pos), buf + done, chunk);
		done += chunk;
	}
	if (done && off + done > f->file.size)
		f->file.size = off + done;
	*written = done;
	return done ? 0 : err;
}

/*
 * hmmfs_pages_iov() - describe [off, off + size) of the file, clipped to its
 * size, as an iovec pointing at the pages (holes point at the zero page).
 * The pages must be CPU-accessible (hmmfs_pages_fault_in).  The iovec stays
 * valid while the caller holds data_lock.
 * Context: data_lock held for reading suffices.
 * Return: the number of iovec entries used (at most max_iov).
 */
size_t hmmfs_pages_iov(struct hmmfs_inode *f, uint64_t off, size_t size,
		       struct iovec *iov, size_t max_iov)
{
	size_t n = 0;

	if (off >= f->file.size)
		return 0;
	if (size > f->file.size - off)
		size = (size_t)(f->file.size - off);
	while (size && n < max_iov) {
		size_t chunk = hmmfs.page_size - in_page(off);
		struct hmm__page *pg = hmm__radix_lookup(&f->file.pages, page_index(off));

		HMM_ASSERT(!pg || cpu_can_touch(pg));
		if (pg)
			hmm__page_touch(&hmmfs.mem, pg);
		if (chunk > size)
			chunk = size;
		iov[n].iov_base = (pg ? (char *)pg->data : hmmfs.zero_page) + in_page(off);
		iov[n].iov_len = chunk;
		n++;
		off += chunk;
		size -= chunk;
	}
	return n;
}

/*
 * Copy [off, off + size) into buf; holes and bytes past the size read as
 * zero.  Return: 0, or the error of bringing a page back.
 */
int hmmfs_pages_read(struct hmmfs_inode *f, uint64_t off, size_t size, char *buf)
{
	while (size) {
		size_t chunk = hmmfs.page_size - in_page(off);
		struct hmm__page *pg = NULL;

		if (chunk > size)
			chunk = size;
		if (off < f->file.size) {
			int err = page_for_cpu(f, page_index(off), false, &pg);
			if (err)
				return err;
		}
		if (pg)
			memcpy(buf, (char *)pg->data + in_page(off), chunk);
		else
			memset(buf, 0, chunk);
		buf += chunk;
		off += chunk;
		size -= chunk;
	}
	return 0;
}

/* Zero [off, off + len) inside one page, if the page exists. */
static int zero_in_page(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	struct hmm__page *pg;
	int err = page_for_cpu(f, page_index(off), false, &pg);

	if (!err && pg && len)
		memset((char *)pg->data + in_page(off), 0, len);
	return err;
}

/*
 * Return: 0, or -ENOSPC/-ENOMEM if the partial last page had to come back
 * from a private device and could not (the size is then unchanged).
 */
int hmmfs_pages_truncate(struct hmmfs_inode *f, uint64_t size)
{
	if (size < f->file.size) {
		uint64_t first_gone = page_index(size + hmmfs.page_size - 1);
		int err = 0;

		if (in_page(size))
			err = zero_in_page(f, size, hmmfs.page_size - in_page(size));
		if (err)
			return err;
		hmm__radix_truncate(&f->file.pages, first_gone, free_page, NULL);
	}
	f->file.size = size;
	return 0;
}

/*
 * Free the whole pages in [off, off + len) and zero the partial ones.
 * Return: 0, or the error of bringing a partial page back (nothing freed).
 */
int hmmfs_pages_punch(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	uint64_t first, last;
	int err = 0;

	if (end > f->file.size)
		end = f->file.size;
	if (off >= end)
		return 0;
	first = page_index(off + hmmfs.page_size - 1); /* first whole page */
	last = page_index(end);                        /* one past the last whole page */
	if (page_index(off) == page_index(end))
		return zero_in_page(f, off, end - off);
	if (in_page(off))
		err = zero_in_page(f, off, hmmfs.page_size - in_page(off));
	if (!err && in_page(end)) {
		/* The tail page: zero its head, or free it if the size ends in it. */
		if (end == f->file.size) {
			struct hmm__page *pg = hmm__radix_delete(&f->file.pages, page_index(end));
			if (pg)
				free_page(pg, NULL);
		} else {
			err = zero_in_page(f, page_index(end) << hmmfs.page_shift, in_page(end));
		}
	}
	if (err)
		return err;
	for (uint64_t i = first; i < last; i++) {
		uint64_t at = i;
		struct hmm__page *pg = hmm__radix_next(&f->file.pages, &at);

		if (!pg || at >= last)
			break;
		hmm__radix_delete(&f->file.pages, at);
		free_page(pg, NULL);
		i = at;
	}
	return 0;
}

/*
 * hmmfs_pages_allocate() - make every page of [off, off + len) present.
 * All or nothing: on failure the pages this call allocated are freed again.
 * Return: 0, -ENOSPC, -ENOMEM.
 */
int hmmfs_pages_allocate(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	uint64_t first = page_index(off), last = page_index(off + len - 1);
	uint64_t *added = NULL, nadded = 0, cap = 0;
	int err = 0;

	for (uint64_t i = first; i <= last; i++) {
		struct hmm__page *pg;

		if (hmm__radix_lookup(&f->file.pages, i))
			continue;
		if (nadded == cap) {
			uint64_t *a;
			cap = cap ? cap * 2 : 64;
			a = realloc(added, cap * sizeof(*a));
			if (!a) {
				err = -ENOMEM;
				break;
			}
			added = a;
		}
		err = page_get(f, i, false, false, &pg);
		if (err)
			break;
		added[nadded++] = i;
	}
	if (err)
		for (uint64_t k = 0; k < nadded; k++)
			free_page(hmm__radix_delete(&f->file.pages, added[k]), NULL);
	free(added);
	return err;
}

/*
 * hmmfs_pages_seek() - SEEK_DATA or SEEK_HOLE from off, at page granularity;
 * a page is data wherever it lives.
 * Context: data_lock held for reading suffices.
 * Return: the offset found, or -ENXIO when off is at or past the size or no
 * data follows.
 */
int64_t hmmfs_pages_seek(struct hmmfs_inode *f, uint64_t off, int whence)
{
	uint64_t index = page_index(off);

	if (off >= f->file.size)
		return -ENXIO;
	if (whence == SEEK_DATA) {
		if (!hmm__radix_next(&f->file.pages, &index))
			return -ENXIO;
		off = index << hmmfs.page_shift > off ? index << hmmfs.page_shift : off;
		return off < f->file.size ? (int64_t)off : -ENXIO;
	}
	/* SEEK_HOLE: the first missing page at or after off, or the size. */
	while (hmm__radix_lookup(&f->file.pages, index))
		index++;
	off = index << hmmfs.page_shift > off ? index << hmmfs.page_shift : off;
	return (int64_t)(off < f->file.size ? off : f->file.size);
}

bool hmmfs_pages_range_is_hole(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	uint64_t index = page_index(off);

	return !hmm__radix_next(&f->file.pages, &index) || index > page_index(off + len - 1);
}

void hmmfs_pages_free_all(struct hmmfs_inode *f)
{
	hmm__radix_truncate(&f->file.pages, 0, free_page, NULL);
	f->file.size = 0;
	if (f->file.devmem) {
		for (unsigned k = 0; k < hmmfs.ndevices; k++)
			hmm__pool_owner_destroy(&hmmfs.devices[k]->pool, f->file.devmem[k]);
		free(f->file.devmem);
		f->file.devmem = NULL;
	}
}

/* Whether a session may use a page of [first, last] of f in place. */
static bool any_in_place(struct hmmfs_inode *f, uint64_t first, uint64_t last)
{
	struct hmm__page *pg;

	while ((pg = hmm__radix_next(&f->file.pages, &first)) && first <= last) {
		if (__atomic_load_n(&pg->in_place, __ATOMIC_RELAXED))
			return true;
		if (first == UINT64_MAX)
			break;
		first++;
	}
	return false;
}

/* The sessions dropped [first, last]: none uses a page of it in place. */
static void none_in_place(struct hmmfs_inode *f, uint64_t first, uint64_t last)
{
	struct hmm__page *pg;

	while ((pg = hmm__radix_next(&f->file.pages, &first)) && first <= last) {
		__atomic_store_n(&pg->in_place, false, __ATOMIC_RELAXED);
		if (first == UINT64_MAX)
			break;
		first++;
	}
}

bool hmmfs_pages_unshare_begin(struct hmmfs_inode *f, uint64_t first, uint64_t last, bool all)
{
	if (!hmmfs_session_shared(f) || (!all && !any_in_place(f, first, last)))
		return false;
	if (f->file.nunshares++ == 0) {
		f->file.unshare_first = first;
		f->file.unshare_last = last;
	} else {
		if (first < f->file.unshare_first)
			f->file.unshare_first = first;
		if (last > f->file.unshare_last)
			f->file.unshare_last = last;
	}
	pthread_rwlock_unlock(&f->data_lock);
	hmmfs_session_invalidate(f, -1, first, last, true);
	pthread_rwlock_wrlock(&f->data_lock);
	/* Fenced meanwhile: nothing was handed out again. */
	none_in_place(f, first, last);
	return true;
}

void hmmfs_pages_unshare_end(struct hmmfs_inode *f)
{
	f->file.nunshares--;
}

void hmmfs_pages_unshare(struct hmmfs_inode *f, uint64_t first, uint64_t last, bool all)
{
	/* From here the caller holds the lock until its change is done:
	 * nobody can look the pages up meanwhile, the fence can go. */
	if (hmmfs_pages_unshare_begin(f, first, last, all))
		hmmfs_pages_unshare_end(f);
}

bool hmmfs_pages_unshared(const struct hmmfs_inode *f, uint64_t index)
{
	return f->file.nunshares && index >= f->file.unshare_first &&
	       index <= f->file.unshare_last;
}

struct hmm__pool_owner **hmmfs_pages_devmem(void *owner, int loc)
{
	struct hmmfs_inode *f = owner;

	if (!f->file.devmem) {
		f->file.devmem = calloc(hmmfs.ndevices, sizeof(*f->file.devmem));
		if (!f->file.devmem)
			return NULL; /* the device's anonymous memory, then */
	}
	return &f->file.devmem[loc];
}
