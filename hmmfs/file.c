/* SPDX-License-Identifier: MIT */
/*
 * File operations: open and release, read and write, fallocate, lseek
 * (SEEK_DATA and SEEK_HOLE) and copy_file_range.
 *
 * Files run in the kernel's cached mode (shared writable mmap needs it) with
 * keep_cache set, so the page cache survives opens; the kernel keeps it
 * coherent with writes, truncation and hole punching, which all pass
 * through it.  The daemon sees cache misses (READ), write-through (WRITE,
 * also for dirty mmap pages written back) and the size-changing operations.
 * Punching and copy_file_range change bytes behind the cache: fence.c.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_IOV_STACK 260 /* a 1 MiB read of 4 KiB pages, unaligned */

void hmmfs_ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);

	if (S_ISDIR(inode->type)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	pthread_mutex_lock(&hmmfs.ref_lock);
	inode->nopen++;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	/* Without keep_cache every open drops the page cache, even pages that
	 * other processes have mapped. */
	fi->keep_cache = 1;
	fi->fh = hmmfs_fh_of_flags(fi->flags);
	/* The migration thread's own opens (migrate.c): its close(2) must not
	 * write the file back (FLUSH does, without the file's lock); it writes
	 * back with fsync(2), under it. */
	if (hmmfs_migrate_opened_by(fuse_req_ctx(req)->pid))
		fi->noflush = 1;
	if (fuse_reply_open(req, fi) != 0)
		hmmfs_inode_unref(inode, 0, 1, 0);
}

void hmmfs_ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	hmmfs_inode_unref(hmmfs_inode_get(ino), 0, 1, 0);
	fuse_reply_err(req, 0);
}

void hmmfs_ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi)
{
	/* Writes are complete when they are answered: nothing is pending.  But
	 * the kernel holds the file's i_rwsem until this reply, which is what
	 * a migration's invalidation waits for (migrate.c). */
	if (!hmmfs_migrate_fsync(req, ino))
		fuse_reply_err(req, 0);
}

/* Return: 0, or the errno for READ or WRITE at off on this inode. */
static int check_io(const struct hmmfs_inode *inode, off_t off)
{
	if (!S_ISREG(inode->type))
		return S_ISDIR(inode->type) ? EISDIR : EINVAL;
	return off < 0 ? EINVAL : 0;
}

void hmmfs_ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	struct iovec stack_iov[READ_IOV_STACK], *iov = stack_iov;
	size_t max_iov = size / hmmfs.page_size + 2, n;
	int err;

	err = check_io(inode, off);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (max_iov > READ_IOV_STACK) {
		iov = malloc(max_iov * sizeof(*iov));
		if (!iov) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	/*
	 * The reply points into the pages: hold them until it is sent, and pin
	 * the inode, which the kernel may forget as soon as it has the data.
	 */
	hmmfs_accessed(inode);
	hmmfs_inode_pin(inode);
	pthread_rwlock_rdlock(&inode->data_lock);
	if (hmmfs_pages_need_fault(inode, (uint64_t)off, size)) {
		/* A CPU read of private-device pages: bring the whole range back
		 * (the kernel's readahead window) under the write lock; pages
		 * being migrated stay where they are. */
		pthread_rwlock_unlock(&inode->data_lock);
		pthread_rwlock_wrlock(&inode->data_lock);
		hmmfs_pages_unshare(inode, page_index(off), last_page_index(off, size), false);
		err = hmmfs_pages_fault_in(inode, (uint64_t)off, size);
	}
	if (err)
		fuse_reply_err(req, -err);
	else if ((n = hmmfs_pages_iov(inode, (uint64_t)off, size, iov, max_iov)))
		fuse_reply_iov(req, iov, (int)n);
	else
		fuse_reply_buf(req, NULL, 0);
	pthread_rwlock_unlock(&inode->data_lock);
	hmmfs_inode_unpin(inode);
	if (iov != stack_iov)
		free(iov);
}

void hmmfs_ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		    size_t size, off_t off, struct fuse_file_info *fi)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	size_t written = 0;
	int err;

	err = check_io(inode, off);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if ((uint64_t)off >= HMMFS_MAX_FILESIZE && size) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	/* Like the VFS at s_maxbytes: what fits is written, the rest is short. */
	if (size > HMMFS_MAX_FILESIZE - (uint64_t)off)
		size = (size_t)(HMMFS_MAX_FILESIZE - (uint64_t)off);
	pthread_rwlock_wrlock(&inode->data_lock);
	if (size)
		hmmfs_pages_unshare(inode, page_index(off), last_page_index(off, size), false);
	if (fi && fi->writepage)
		err = hmmfs_fence_writeback(inode, buf, size, (uint64_t)off, &written);
	else
		err = hmmfs_pages_write(inode, buf, size, (uint64_t)off, false, &written);
	pthread_rwlock_unlock(&inode->data_lock);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	if (written)
		hmmfs_touch(inode, true, true);
	fuse_reply_write(req, written);
}

void hmmfs_ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			off_t length, struct fuse_file_info *fi)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	uint64_t off = (uint64_t)offset, len = (uint64_t)length;
	bool punch = mode & FALLOC_FL_PUNCH_HOLE;
	bool size_changed = false;
	int err = 0;

	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (punch && !(mode & FALLOC_FL_KEEP_SIZE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!S_ISREG(inode->type)) {
		fuse_reply_err(req, S_ISDIR(inode->type) ? EISDIR : ENODEV);
		return;
	}
	if (off > HMMFS_MAX_FILESIZE || len > HMMFS_MAX_FILESIZE - off) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	pthread_rwlock_wrlock(&inode->data_lock);
	if (punch) {
		if (len)
			hmmfs_pages_unshare(inode, page_index(off), last_page_index(off, len), true);
		err = hmmfs_pages_punch(inode, off, len);
		if (!err)
			hmmfs_fence_raise(inode, off, len);
	} else {
		err = hmmfs_pages_allocate(inode, off, len);
		if (!err && !(mode & FALLOC_FL_KEEP_SIZE) && off + len > inode->file.size) {
			inode->file.size = off + len;
			size_changed = true;
		}
	}
	pthread_rwlock_unlock(&inode->data_lock);
	if (!err && punch) {
		hmmfs_fence_lower_reply(req, inode, ino, off, len, false);
		return;
	}
	if (!err)
		hmmfs_touch(inode, size_changed, true);
	fuse_reply_err(req, -err);
}

void hmmfs_ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		    struct fuse_file_info *fi)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	int64_t found;

	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!S_ISREG(inode->type)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	pthread_rwlock_rdlock(&inode->data_lock);
	found = hmmfs_pages_seek(inode, (uint64_t)off, whence);
	pthread_rwlock_unlock(&inode->data_lock);
	if (found < 0)
		fuse_reply_err(req, (int)-found);
	else
		fuse_reply_lseek(req, (off_t)found);
}

/*
 * Copy len bytes from one file to another (or within one file; the kernel
 * refuses overlapping ranges).  Whole source pages that are holes stay holes
 * in the destination when they cover whole destination pages.
 * Context: in's data_lock (read) and out's (write) are held.
 */
static int copy_range(struct hmmfs_inode *in, uint64_t off_in,
		      struct hmmfs_inode *out, uint64_t off_out, size_t len,
		      size_t *copied)
{
	size_t ps = hmmfs.page_size, done = 0;
	char *bounce = malloc(ps);
	int err = 0;

	if (!bounce)
		return -ENOMEM;
	while (done < len) {
		uint64_t dst = off_out + done;
		size_t chunk = ps - (dst & (ps - 1)), n;

		if (chunk > len - done)
			chunk = len - done;
		if (chunk == ps && hmmfs_pages_range_is_hole(in, off_in + done, chunk)) {
			/* A hole over a whole destination page: punch, don't allocate. */
			uint64_t size = out->file.size;
			err = hmmfs_pages_punch(out, dst, chunk);
			if (err)
				break;
			if (dst + chunk > size)
				out->file.size = dst + chunk;
			done += chunk;
			continue;
		}
		err = hmmfs_pages_read(in, off_in + done, chunk, bounce);
		if (err)
			break;
		err = hmmfs_pages_write(out, bounce, chunk, dst, false, &n);
		done += n;
		if (err || n < chunk)
			break;
	}
	free(bounce);
	*copied = done;
	return done ? 0 : err;
}

/*
 * Whether hmmfs can copy into [off, off + len) of out itself.  After the
 * reply the kernel drops every page-cache page the range touches, whole,
 * and a store through a mapping into a partial page's other bytes since the
 * kernel wrote the page back would be lost with it.  So a range that starts
 * or ends inside a page (other than at or past the end of the file, where
 * nothing follows) is left to the kernel, which copies it through the page
 * cache when told EOPNOTSUPP, as for a filesystem without copy_file_range.
 * Context: out->data_lock held.
 */
static bool copy_in_daemon(const struct hmmfs_inode *out, uint64_t off, uint64_t len)
{
	uint64_t cache_page = (uint64_t)sysconf(_SC_PAGESIZE), end = off + len;

	return !(off % cache_page) && (!(end % cache_page) || end >= out->file.size);
}

void hmmfs_ll_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			      struct fuse_file_info *fi_in, fuse_ino_t ino_out,
			      off_t off_out, struct fuse_file_info *fi_out,
			      size_t len, int flags)
{
	struct hmmfs_inode *in = hmmfs_inode_get(ino_in);
	struct hmmfs_inode *out = hmmfs_inode_get(ino_out);
	size_t copied = 0;
	bool fenced_in = false, fenced_out = false;
	int err = 0;

	if (flags) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!S_ISREG(in->type) || !S_ISREG(out->type)) {
		fuse_reply_err(req, S_ISDIR(in->type) || S_ISDIR(out->type) ? EISDIR : EINVAL);
		return;
	}
	if (off_in < 0 || off_out < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((uint64_t)off_out >= HMMFS_MAX_FILESIZE) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	if (len > HMMFS_MAX_FILESIZE - (uint64_t)off_out)
		len = (size_t)(HMMFS_MAX_FILESIZE - (uint64_t)off_out);

	/* Take both ranges' device memory from the sessions first, each with
	 * only its own file's lock (session.c: no data_lock while waiting);
	 * the fences keep them until the copy is done. */
	if (len) {
		pthread_rwlock_wrlock(&in->data_lock);
		fenced_in = hmmfs_pages_unshare_begin(in, page_index(off_in),
						      last_page_index(off_in, len), false);
		pthread_rwlock_unlock(&in->data_lock);
		pthread_rwlock_wrlock(&out->data_lock);
		/* Holes copied over the destination take its pages away. */
		fenced_out = hmmfs_pages_unshare_begin(out, page_index(off_out),
						       last_page_index(off_out, len), true);
		pthread_rwlock_unlock(&out->data_lock);
	}
	/* Lock order for two files: the lower address first.  Both for
	 * writing: reading the source may bring its pages back from a device. */
	if (in == out) {
		pthread_rwlock_wrlock(&out->data_lock);
	} else if (in < out) {
		pthread_rwlock_wrlock(&in->data_lock);
		pthread_rwlock_wrlock(&out->data_lock);
	} else {
		pthread_rwlock_wrlock(&out->data_lock);
		pthread_rwlock_wrlock(&in->data_lock);
	}
	if ((uint64_t)off_in < in->file.size) {
		if (len > in->file.size - (uint64_t)off_in)
			len = (size_t)(in->file.size - (uint64_t)off_in);
		if (copy_in_daemon(out, (uint64_t)off_out, len)) {
			err = copy_range(in, (uint64_t)off_in, out, (uint64_t)off_out, len,
					 &copied);
			hmmfs_fence_raise(out, (uint64_t)off_out, copied);
		} else {
			err = -EOPNOTSUPP;
		}
	}
	if (fenced_in)
		hmmfs_pages_unshare_end(in);
	if (fenced_out)
		hmmfs_pages_unshare_end(out);
	if (in != out)
		pthread_rwlock_unlock(&in->data_lock);
	pthread_rwlock_unlock(&out->data_lock);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	hmmfs_accessed(in);
	if (copied)
		hmmfs_fence_lower_reply(req, out, ino_out, (uint64_t)off_out, copied, true);
	else
		fuse_reply_write(req, 0);
}
