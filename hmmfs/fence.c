/* SPDX-License-Identifier: MIT */
/*
 * Fences: dropping the kernel's stale copy of bytes the daemon changed
 * behind the page cache.
 *
 * Punching a hole (FALLOCATE) and copy_file_range change a file's bytes in
 * the daemon, not through the page cache.  The kernel writes the range back
 * before sending the request and drops or zeroes its cached pages after the
 * reply, but it does not stop page faults or write-back in between (unlike
 * truncation, for which it holds write-back off).  A page the range shares
 * with other data, the partial page at either end, can meanwhile be dirtied
 * by a store through a mapping and written back still holding the old bytes
 * of the range; if that WRITE reaches the daemon after the change, the old
 * bytes come back, in the daemon and, once the page is read again, in the
 * cache.
 *
 * So the handler that changes the bytes raises a fence over them with the
 * change, under the file's data_lock; then the invalidator (invalidate.c)
 * drops the range from the page cache, lowers the fence and replies.  While the fence is up, a write-back WRITE leaves the fenced bytes
 * alone; its other bytes are written.  The invalidation waits for every
 * write-back of those pages still in flight and writes dirty ones back, so
 * once it returns, no page of the range in the cache holds old bytes: any
 * page there was read after the change.
 *
 * No write(2) can be in flight meanwhile: the kernel holds the file's
 * i_rwsem across FALLOCATE (punching) and COPY_FILE_RANGE (the destination)
 * until they are answered, as during a write(2); so every WRITE under the
 * fence is write-back.  That lock is also what lets a worker invalidate in
 * a handler (hmmfs.h, lock order).  The kernel serializes the two requests
 * per file for the same reason, so one file has at most one fence at a
 * time; a second one would widen the first.
 */
#include "config.h"
#include "hmmfs.h"

#include <stdlib.h>

/*
 * hmmfs_fence_raise() - fence [off, off + len) of f, whose bytes the caller
 * has just changed behind the page cache.
 * Context: f->data_lock held for writing, across the change.
 */
void hmmfs_fence_raise(struct hmmfs_inode *f, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;

	if (!len)
		return;
	if (!f->file.nfences || off < f->file.fence_off)
		f->file.fence_off = off;
	if (!f->file.nfences || end > f->file.fence_end)
		f->file.fence_end = end;
	f->file.nfences++;
}

/* The reply a request owes once its fence is lowered. */
struct fence_reply {
	struct hmmfs_inval_job job;  /* first: the invalidator's view */
	fuse_req_t req;
	struct hmmfs_inode *f;
	bool copy;                   /* COPY_FILE_RANGE: reply with the count */
	size_t copied;
};

static void lowered(struct hmmfs_inval_job *job)
{
	struct fence_reply *r = (struct fence_reply *)job;

	pthread_rwlock_wrlock(&r->f->data_lock);
	r->f->file.nfences--;
	pthread_rwlock_unlock(&r->f->data_lock);
	hmmfs_touch(r->f, true, true);
	if (r->copy)
		fuse_reply_write(r->req, r->copied);
	else
		fuse_reply_err(r->req, 0);
}

static void lowered_free(struct hmmfs_inval_job *job)
{
	lowered(job);
	free(job);
}

/*
 * hmmfs_fence_lower_reply() - drop [off, off + len) of the file from the
 * page cache, lower the fence raised over it, and answer req: 0 for a
 * FALLOCATE, the count for a COPY_FILE_RANGE (copy).  The invalidator does
 * it, so that the worker is free to serve the write-back it causes.
 * Context: a FUSE worker serving req, a FALLOCATE or COPY_FILE_RANGE on ino
 * (the kernel holds the file's i_rwsem until the reply); no lock held.
 */
void hmmfs_fence_lower_reply(fuse_req_t req, struct hmmfs_inode *f, fuse_ino_t ino,
			     uint64_t off, uint64_t len, bool copy)
{
	struct fence_reply *r = malloc(sizeof(*r)), local;

	if (!r) {
		/* Out of memory: invalidate in this worker.  Only a write-back
		 * that finds every other worker busy doing the same can wait. */
		r = &local;
		r->job.done = lowered;
	} else {
		r->job.done = lowered_free;
	}
	r->job.ino = ino;
	r->job.off = (off_t)off;
	r->job.len = (off_t)len;
	r->req = req;
	r->f = f;
	r->copy = copy;
	r->copied = (size_t)len;
	if (r == &local)
		hmmfs_invalidate_now(&r->job);
	else
		hmmfs_invalidate_async(&r->job);
}

/*
 * hmmfs_fence_writeback() - a write-back WRITE: like hmmfs_pages_write,
 * except that the bytes under a fence are left as they are (and counted as
 * written: the kernel's copy of them is stale).
 * Context: f->data_lock held for writing.
 * Return: as hmmfs_pages_write.
 */
int hmmfs_fence_writeback(struct hmmfs_inode *f, const char *buf, size_t size,
			  uint64_t off, size_t *written)
{
	uint64_t end = off + size, lo, hi;
	size_t n = 0;
	int err;

	if (!f->file.nfences || end <= f->file.fence_off || off >= f->file.fence_end)
		return hmmfs_pages_write(f, buf, size, off, true, written);
	lo = f->file.fence_off > off ? f->file.fence_off : off;
	hi = f->file.fence_end < end ? f->file.fence_end : end;
	*written = 0;
	if (lo > off) {
		err = hmmfs_pages_write(f, buf, (size_t)(lo - off), off, true, &n);
		if (err || n < lo - off) {
			*written = n;
			return err;
		}
	}
	if (hi < end) {
		err = hmmfs_pages_write(f, buf + (hi - off), (size_t)(end - hi), hi, true, &n);
		if (err || n < end - hi) {
			*written = (size_t)(lo - off);
			return *written ? 0 : err;
		}
	}
	*written = size;
	return 0;
}
