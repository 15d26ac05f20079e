/* SPDX-License-Identifier: MIT */
/*
 * Inodes: creation, lifetime, attributes (getattr, setattr, statfs).
 *
 * The FUSE node id of an inode is its address; the root is FUSE_ROOT_ID.
 * The kernel only sends node ids it was given and has not forgotten, and an
 * inode lives while the kernel remembers it, so the cast is safe.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

struct hmmfs_fs hmmfs;

void hmmfs_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

static bool timespec_le(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec);
}

/* Context: takes inode->attr_lock. */
void hmmfs_touch(struct hmmfs_inode *inode, bool mtime, bool ctime)
{
	struct timespec now;

	hmmfs_now(&now);
	pthread_mutex_lock(&inode->attr_lock);
	if (mtime)
		inode->mtime = now;
	if (ctime)
		inode->ctime = now;
	pthread_mutex_unlock(&inode->attr_lock);
}

/*
 * Update atime after a read the daemon served, with relatime's rule (the
 * Linux default, which tmpfs follows): only if atime is not newer than
 * mtime or ctime, or is a day old.
 * Context: takes inode->attr_lock.
 */
void hmmfs_accessed(struct hmmfs_inode *inode)
{
	struct timespec now;

	hmmfs_now(&now);
	pthread_mutex_lock(&inode->attr_lock);
	if (timespec_le(&inode->atime, &inode->mtime) ||
	    timespec_le(&inode->atime, &inode->ctime) ||
	    now.tv_sec - inode->atime.tv_sec >= 24 * 3600)
		inode->atime = now;
	pthread_mutex_unlock(&inode->attr_lock);
}

struct hmmfs_inode *hmmfs_inode_get(fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return hmmfs.root;
	return (struct hmmfs_inode *)(uintptr_t)ino;
}

/*
 * hmmfs_inode_new() - a new inode with nlink 0 and nlookup 0; the caller
 * links it into a directory and hands it to the kernel.
 * Context: takes fs->ref_lock.
 * Return: 0, -ENOSPC past nr_inodes, -ENOMEM.
 */
int hmmfs_inode_new(mode_t mode, uid_t uid, gid_t gid, dev_t rdev,
		    struct hmmfs_inode **out)
{
	struct hmmfs_inode *inode = calloc(1, sizeof(*inode));

	if (!inode)
		return -ENOMEM;
	pthread_mutex_lock(&hmmfs.ref_lock);
	if (hmmfs.ninodes >= hmmfs.max_inodes) {
		pthread_mutex_unlock(&hmmfs.ref_lock);
		free(inode);
		return -ENOSPC;
	}
	hmmfs.ninodes++;
	inode->ino = ++hmmfs.next_ino;
	inode->generation = inode->ino;
	inode->all_next = hmmfs.all;
	if (hmmfs.all)
		hmmfs.all->all_pprev = &inode->all_next;
	inode->all_pprev = &hmmfs.all;
	hmmfs.all = inode;
	pthread_mutex_unlock(&hmmfs.ref_lock);

	pthread_mutex_init(&inode->attr_lock, NULL);
	pthread_rwlock_init(&inode->data_lock, NULL);
	inode->mode = mode;
	inode->type = mode & S_IFMT;
	inode->uid = uid;
	inode->gid = gid;
	inode->rdev = rdev;
	hmmfs_now(&inode->atime);
	inode->mtime = inode->ctime = inode->atime;
	if (S_ISREG(mode))
		hmm__radix_init(&inode->file.pages);
	*out = inode;
	return 0;
}

/* Free an unreachable inode.  Context: no locks of this inode held. */
void hmmfs_inode_free(struct hmmfs_inode *inode)
{
	pthread_mutex_lock(&hmmfs.ref_lock);
	*inode->all_pprev = inode->all_next;
	if (inode->all_next)
		inode->all_next->all_pprev = inode->all_pprev;
	if (!inode->released)
		hmmfs.ninodes--;
	pthread_mutex_unlock(&hmmfs.ref_lock);

	if (S_ISREG(inode->type))
		hmmfs_pages_free_all(inode);
	else if (S_ISDIR(inode->type))
		hmmfs_dir_free(inode);
	else if (S_ISLNK(inode->type))
		free(inode->symlink);
	hmmfs_xattr_free_all(inode);
	pthread_mutex_destroy(&inode->attr_lock);
	pthread_rwlock_destroy(&inode->data_lock);
	free(inode);
}

static void settle_unlock(struct hmmfs_inode *inode);

/* Context: fs->ref_lock held. */
static bool is_dead(const struct hmmfs_inode *inode)
{
	return inode != hmmfs.root && !inode->nlookup && !inode->nopen &&
	       !inode->nlink && !inode->npin;
}

/* A file nobody can name or open any more gives its pages back now. */
static void release_data(struct hmmfs_inode *inode)
{
	if (!S_ISREG(inode->type))
		return;
	/* No open is left to look pages up with: tell the sessions, but do
	 * not wait for them (the caller may hold ns_lock). */
	hmmfs_session_invalidate(inode, -1, 0, UINT64_MAX, false);
	pthread_rwlock_wrlock(&inode->data_lock);
	hmmfs_pages_free_all(inode);
	pthread_rwlock_unlock(&inode->data_lock);
}

/*
 * Act on counts that just went down: release the data of an inode that lost
 * its last name and handle, free one that nothing refers to at all.
 * Context: called with fs->ref_lock held, which it drops; the caller holds
 * no lock of this inode (fs->ns_lock may be held).
 */
static void settle_unlock(struct hmmfs_inode *inode)
{
	bool release = false, dead;

	if (inode != hmmfs.root && !inode->released && !inode->nlink && !inode->nopen) {
		inode->released = true;
		hmmfs.ninodes--;
		inode->npin++; /* a FORGET must not free it while its pages go */
		release = true;
	}
	dead = is_dead(inode);
	pthread_mutex_unlock(&hmmfs.ref_lock);
	if (release) {
		release_data(inode);
		hmmfs_inode_unpin(inode);
	} else if (dead) {
		hmmfs_inode_free(inode);
	}
}

/*
 * hmmfs_inode_unref() - drop kernel lookups, open handles and/or links;
 * release the data or free the inode when that was the last reference.
 * Context: takes fs->ref_lock; the caller may hold fs->ns_lock.
 */
void hmmfs_inode_unref(struct hmmfs_inode *inode, uint64_t nlookup,
		       uint64_t nopen, uint64_t nlink)
{
	pthread_mutex_lock(&hmmfs.ref_lock);
	HMM_ASSERT(inode->nlookup >= nlookup && inode->nopen >= nopen &&
		   inode->nlink >= nlink);
	inode->nlookup -= nlookup;
	inode->nopen -= nopen;
	inode->nlink -= nlink;
	settle_unlock(inode);
}

/*
 * hmmfs_inode_pin() - keep the inode alive past the reply of the request
 * that names it, until hmmfs_inode_unpin().
 * Context: takes fs->ref_lock; called before the reply.
 */
void hmmfs_inode_pin(struct hmmfs_inode *inode)
{
	pthread_mutex_lock(&hmmfs.ref_lock);
	inode->npin++;
	pthread_mutex_unlock(&hmmfs.ref_lock);
}

/* Context: takes fs->ref_lock; may free the inode. */
void hmmfs_inode_unpin(struct hmmfs_inode *inode)
{
	pthread_mutex_lock(&hmmfs.ref_lock);
	HMM_ASSERT(inode->npin > 0);
	inode->npin--;
	settle_unlock(inode);
}

/* Context: takes inode->attr_lock and data_lock (read) for regular files;
 * for directories the caller holds fs->ns_lock or accepts a racy size. */
void hmmfs_inode_stat(struct hmmfs_inode *inode, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = inode->ino;
	st->st_blksize = (blksize_t)hmmfs.page_size;
	if (S_ISREG(inode->type)) {
		pthread_rwlock_rdlock(&inode->data_lock);
		st->st_size = (off_t)inode->file.size;
		st->st_blocks = (blkcnt_t)(hmmfs_pages_count(inode) * (hmmfs.page_size / 512));
		pthread_rwlock_unlock(&inode->data_lock);
	} else if (S_ISDIR(inode->type)) {
		/* Like tmpfs: a bogus 20 bytes per entry, "." and ".." included. */
		st->st_size = (off_t)(20 * (__atomic_load_n(&inode->dir.nentries, __ATOMIC_RELAXED) + 2));
	} else if (S_ISLNK(inode->type)) {
		st->st_size = (off_t)strlen(inode->symlink);
	}
	pthread_mutex_lock(&hmmfs.ref_lock);
	st->st_nlink = (nlink_t)inode->nlink;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	pthread_mutex_lock(&inode->attr_lock);
	st->st_mode = inode->mode;
	st->st_uid = inode->uid;
	st->st_gid = inode->gid;
	st->st_rdev = inode->rdev;
	st->st_atim = inode->atime;
	st->st_mtim = inode->mtime;
	st->st_ctim = inode->ctime;
	pthread_mutex_unlock(&inode->attr_lock);
}

/*
 * Fill a reply entry and count one more kernel lookup of the inode.
 * Context: takes fs->ref_lock and the inode's attribute locks.
 */
void hmmfs_entry_fill(struct hmmfs_inode *inode, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	pthread_mutex_lock(&hmmfs.ref_lock);
	inode->nlookup++;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	e->ino = (fuse_ino_t)(uintptr_t)inode;
	e->generation = inode->generation;
	e->attr_timeout = hmmfs.timeout;
	e->entry_timeout = hmmfs.timeout;
	hmmfs_inode_stat(inode, &e->attr);
}

void hmmfs_ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	hmmfs_inode_unref(hmmfs_inode_get(ino), nlookup, 0, 0);
	fuse_reply_none(req);
}

void hmmfs_ll_forget_multi(fuse_req_t req, size_t count,
			   struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		hmmfs_inode_unref(hmmfs_inode_get(forgets[i].ino), forgets[i].nlookup, 0, 0);
	fuse_reply_none(req);
}

void hmmfs_ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	hmmfs_inode_stat(hmmfs_inode_get(ino), &st);
	fuse_reply_attr(req, &st, hmmfs.timeout);
}

static void set_time(struct timespec *t, const struct timespec *given, bool now,
		     const struct timespec *nowts)
{
	*t = now ? *nowts : *given;
}

void hmmfs_ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		      int to_set, struct fuse_file_info *fi)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	struct timespec now;
	struct stat st;
	int err;

	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (S_ISDIR(inode->type)) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		if (!S_ISREG(inode->type)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		if (attr->st_size < 0) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		if ((uint64_t)attr->st_size > HMMFS_MAX_FILESIZE) {
			fuse_reply_err(req, EFBIG);
			return;
		}
		pthread_rwlock_wrlock(&inode->data_lock);
		hmmfs_pages_unshare(inode, page_index((uint64_t)attr->st_size), UINT64_MAX, true);
		err = hmmfs_pages_truncate(inode, (uint64_t)attr->st_size);
		pthread_rwlock_unlock(&inode->data_lock);
		if (err) {
			fuse_reply_err(req, -err);
			return;
		}
	}

	hmmfs_now(&now);
	pthread_mutex_lock(&inode->attr_lock);
	if (to_set & FUSE_SET_ATTR_MODE)
		inode->mode = (inode->mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & FUSE_SET_ATTR_UID)
		inode->uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		inode->gid = attr->st_gid;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
		set_time(&inode->atime, &attr->st_atim, to_set & FUSE_SET_ATTR_ATIME_NOW, &now);
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
		set_time(&inode->mtime, &attr->st_mtim, to_set & FUSE_SET_ATTR_MTIME_NOW, &now);
	else if (to_set & FUSE_SET_ATTR_SIZE)
		inode->mtime = now;
	if (to_set & FUSE_SET_ATTR_CTIME)
		inode->ctime = attr->st_ctim;
	else
		inode->ctime = now;
	pthread_mutex_unlock(&inode->attr_lock);

	hmmfs_inode_stat(inode, &st);
	fuse_reply_attr(req, &st, hmmfs.timeout);
}

void hmmfs_ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	uint64_t used = hmm__pool_used(&hmmfs.host);

	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = hmmfs.page_size;
	sv.f_frsize = hmmfs.page_size;
	sv.f_blocks = hmmfs.host.capacity_pages;
	sv.f_bfree = sv.f_blocks > used ? sv.f_blocks - used : 0;
	sv.f_bavail = sv.f_bfree;
	pthread_mutex_lock(&hmmfs.ref_lock);
	sv.f_files = hmmfs.max_inodes;
	sv.f_ffree = hmmfs.max_inodes - hmmfs.ninodes;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	sv.f_favail = sv.f_ffree;
	sv.f_namemax = HMMFS_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* At unmount: free every inode, whatever its counts. */
void hmmfs_destroy_all(void)
{
	while (hmmfs.all)
		hmmfs_inode_free(hmmfs.all);
	hmmfs.root = NULL;
}
