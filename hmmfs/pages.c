/* SPDX-License-Identifier: MIT */
/*
 * A regular file's data, in pages of fs->page_size taken from the host
 * pool and indexed by page number in a radix tree.  A page that is not in
 * the tree is a hole: it reads as zeros and holds no memory.
 *
 * Invariant: no page lies wholly at or beyond the size (truncation frees
 * them), and the bytes of the last page beyond the size are zero, so that
 * growing the file again exposes zeros.
 *
 * Context for every function here: the caller holds f->data_lock, for
 * writing when the function changes the file.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static uint64_t page_of(uint64_t off)
{
	return off >> hmmfs.page_shift;
}

static uint64_t in_page(uint64_t off)
{
	return off & (hmmfs.page_size - 1);
}

static void free_page(void *page, void *arg)
{
	hmm__pool_free(&hmmfs.host, page);
}

uint64_t hmmfs_pages_count(struct hmmfs_inode *f)
{
	return f->file.pages.count;
}

/*
 * The page at index, allocated if it is a hole.  A new page is zeroed unless
 * the caller is about to overwrite all of it (whole == true).
 */
static int page_get(struct hmmfs_inode *f, uint64_t index, bool whole, char **out)
{
	char *page = hmm__radix_lookup(&f->file.pages, index);
	bool zeroed;
	int err;

	if (!page) {
		err = hmm__pool_alloc(&hmmfs.host, (void **)&page, &zeroed);
		if (err)
			return err;
		if (!zeroed && !whole)
			memset(page, 0, hmmfs.page_size);
		err = hmm__radix_insert(&f->file.pages, index, page);
		if (err) {
			hmm__pool_free(&hmmfs.host, page);
			return err;
		}
	}
	*out = page;
	return 0;
}

/*
 * hmmfs_pages_write() - copy buf into the file at off, allocating pages.
 * A write that runs out of memory part way is short: *written says how much
 * landed, and the error is returned only if nothing did.
 * Return: 0, -ENOSPC (host_mem full), -ENOMEM.
 */
int hmmfs_pages_write(struct hmmfs_inode *f, const char *buf, size_t size,
		      uint64_t off, size_t *written)
{
	size_t done = 0;
	int err = 0;

	while (done < size) {
		uint64_t pos = off + done;
		size_t chunk = hmmfs.page_size - in_page(pos);
		char *page;

		if (chunk > size - done)
			chunk = size - done;
		err = page_get(f, page_of(pos), chunk == hmmfs.page_size, &page);
		if (err)
			break;
		memcpy(page + in_page(pos), buf + done, chunk);
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
 * The iovec stays valid while the caller holds data_lock.
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
		char *page = hmm__radix_lookup(&f->file.pages, page_of(off));

		if (chunk > size)
			chunk = size;
		iov[n].iov_base = (page ? page : hmmfs.zero_page) + in_page(off);
		iov[n].iov_len = chunk;
		n++;
		off += chunk;
		size -= chunk;
	}
	return n;
}

/* Copy [off, off + size) into buf; holes and bytes past the size read as zero. */
void hmmfs_pages_read(struct hmmfs_inode *f, uint64_t off, size_t size, char *buf)
{
	while (size) {
		size_t chunk = hmmfs.page_size - in_page(off);
		char *page = off < f->file.size ? hmm__radix_lookup(&f->file.pages, page_of(off)) : NULL;

		if (chunk > size)
			chunk = size;
		if (page)
			memcpy(buf, page + in_page(off), chunk);
		else
			memset(buf, 0, chunk);
		buf += chunk;
		off += chunk;
		size -= chunk;
	}
}

/* Zero [off, off + len) inside one page, if the page exists. */
static void zero_in_page(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	char *page = hmm__radix_lookup(&f->file.pages, page_of(off));

	if (page && len)
		memset(page + in_page(off), 0, len);
}

void hmmfs_pages_truncate(struct hmmfs_inode *f, uint64_t size)
{
	if (size < f->file.size) {
		uint64_t first_gone = page_of(size + hmmfs.page_size - 1);

		hmm__radix_truncate(&f->file.pages, first_gone, free_page, NULL);
		if (in_page(size))
			zero_in_page(f, size, hmmfs.page_size - in_page(size));
	}
	f->file.size = size;
}

/* Free the whole pages in [off, off + len) and zero the partial ones. */
void hmmfs_pages_punch(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	uint64_t first, last;

	if (end > f->file.size)
		end = f->file.size;
	if (off >= end)
		return;
	first = page_of(off + hmmfs.page_size - 1); /* first whole page */
	last = page_of(end);                        /* one past the last whole page */
	if (page_of(off) == page_of(end)) {
		zero_in_page(f, off, end - off);
		return;
	}
	if (in_page(off))
		zero_in_page(f, off, hmmfs.page_size - in_page(off));
	if (in_page(end)) {
		/* The tail page: zero its head, or free it if the size ends in it. */
		if (end == f->file.size) {
			void *page = hmm__radix_delete(&f->file.pages, page_of(end));
			if (page)
				free_page(page, NULL);
		} else {
			zero_in_page(f, page_of(end) << hmmfs.page_shift, in_page(end));
		}
	}
	for (uint64_t i = first; i < last; i++) {
		uint64_t at = i;
		void *page = hmm__radix_next(&f->file.pages, &at);

		if (!page || at >= last)
			break;
		hmm__radix_delete(&f->file.pages, at);
		free_page(page, NULL);
		i = at;
	}
}

/*
 * hmmfs_pages_allocate() - make every page of [off, off + len) present.
 * All or nothing: on failure the pages this call allocated are freed again.
 * Return: 0, -ENOSPC, -ENOMEM.
 */
int hmmfs_pages_allocate(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	uint64_t first = page_of(off), last = page_of(off + len - 1);
	uint64_t *added = NULL, nadded = 0, cap = 0;
	int err = 0;

	for (uint64_t i = first; i <= last; i++) {
		char *page;

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
		err = page_get(f, i, false, &page);
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
 * hmmfs_pages_seek() - SEEK_DATA or SEEK_HOLE from off, at page granularity.
 * Return: the offset found, or -ENXIO when off is at or past the size or no
 * data follows.
 */
int64_t hmmfs_pages_seek(struct hmmfs_inode *f, uint64_t off, int whence)
{
	uint64_t index = page_of(off);

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
	uint64_t index = page_of(off);

	return !hmm__radix_next(&f->file.pages, &index) || index > page_of(off + len - 1);
}

void hmmfs_pages_free_all(struct hmmfs_inode *f)
{
	hmm__radix_truncate(&f->file.pages, 0, free_page, NULL);
	f->file.size = 0;
}
