/* SPDX-License-Identifier: MIT */
/*
 * Directories and the namespace: lookup, creation of every kind of node,
 * link, unlink, rmdir, rename and readdir.
 *
 * Every operation that changes names holds fs->ns_lock for writing from its
 * first check to its last change, so the checks it makes (exists, empty, not
 * an ancestor) still hold when it acts.  Inodes that lose their last name
 * are released after the lock is dropped.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIR_MIN_BUCKETS 8
#define DIR_FIRST_COOKIE 3 /* 1 and 2 follow "." and ".." */

static uint32_t name_hash(const char *name, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 16777619u;
	return h;
}

int hmmfs_dir_init(struct hmmfs_inode *dir, struct hmmfs_inode *parent)
{
	struct hmmfs_dir *d = &dir->dir;

	memset(d, 0, sizeof(*d));
	d->buckets = calloc(DIR_MIN_BUCKETS, sizeof(*d->buckets));
	if (!d->buckets)
		return -ENOMEM;
	d->nbuckets = DIR_MIN_BUCKETS;
	d->next_cookie = DIR_FIRST_COOKIE;
	d->parent = parent ? parent : dir;
	return 0;
}

void hmmfs_dir_free(struct hmmfs_inode *dir)
{
	struct hmmfs_dir *d = &dir->dir;

	for (uint64_t i = 0; i < d->norder; i++)
		free(d->order[i].d);
	free(d->order);
	free(d->buckets);
}

static struct hmmfs_dirent *dir_find(struct hmmfs_dir *d, const char *name)
{
	size_t len = strlen(name);
	uint32_t h = name_hash(name, len);

	for (struct hmmfs_dirent *e = d->buckets[h & (d->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == h && e->namelen == len && !memcmp(e->name, name, len))
			return e;
	return NULL;
}

/* Make room for one more entry, so that dir_insert cannot fail. */
static int dir_reserve(struct hmmfs_dir *d)
{
	if (d->nentries + 1 > d->nbuckets) {
		uint32_t n = d->nbuckets * 2;
		struct hmmfs_dirent **b = calloc(n, sizeof(*b));

		if (!b)
			return -ENOMEM;
		for (uint32_t i = 0; i < d->nbuckets; i++) {
			struct hmmfs_dirent *e = d->buckets[i], *next;
			for (; e; e = next) {
				next = e->hnext;
				e->hnext = b[e->hash & (n - 1)];
				b[e->hash & (n - 1)] = e;
			}
		}
		free(d->buckets);
		d->buckets = b;
		d->nbuckets = n;
	}
	if (d->norder == d->order_cap) {
		/* Squeeze out holes first; grow only if that frees too little. */
		if (d->norder - d->nentries > d->norder / 2) {
			uint64_t j = 0;
			for (uint64_t i = 0; i < d->norder; i++)
				if (d->order[i].d)
					d->order[j++] = d->order[i];
			d->norder = j;
		} else {
			uint64_t cap = d->order_cap ? d->order_cap * 2 : 16;
			struct hmmfs_dirslot *o = realloc(d->order, cap * sizeof(*o));
			if (!o)
				return -ENOMEM;
			d->order = o;
			d->order_cap = cap;
		}
	}
	return 0;
}

static struct hmmfs_dirent *dirent_new(const char *name, struct hmmfs_inode *inode)
{
	size_t len = strlen(name);
	struct hmmfs_dirent *e = malloc(sizeof(*e) + len + 1);

	if (!e)
		return NULL;
	memcpy(e->name, name, len + 1);
	e->namelen = (uint16_t)len;
	e->hash = name_hash(name, len);
	e->inode = inode;
	e->hnext = NULL;
	return e;
}

/* Context: after a successful dir_reserve() on the same directory. */
static void dir_insert(struct hmmfs_dir *d, struct hmmfs_dirent *e)
{
	uint32_t b = e->hash & (d->nbuckets - 1);

	HMM_ASSERT(d->norder < d->order_cap);
	e->hnext = d->buckets[b];
	d->buckets[b] = e;
	e->cookie = d->next_cookie++;
	d->order[d->norder].cookie = e->cookie;
	d->order[d->norder].d = e;
	d->norder++;
	__atomic_store_n(&d->nentries, d->nentries + 1, __ATOMIC_RELAXED);
}

/* Index of the first slot whose cookie is greater than off. */
static uint64_t slot_after(const struct hmmfs_dir *d, uint64_t off)
{
	uint64_t lo = 0, hi = d->norder;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (d->order[mid].cookie <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Unlink e from the directory and free it. */
static void dir_remove(struct hmmfs_dir *d, struct hmmfs_dirent *e)
{
	struct hmmfs_dirent **pp = &d->buckets[e->hash & (d->nbuckets - 1)];
	uint64_t slot;

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	slot = slot_after(d, e->cookie - 1);
	HMM_ASSERT(slot < d->norder && d->order[slot].d == e);
	d->order[slot].d = NULL;
	__atomic_store_n(&d->nentries, d->nentries - 1, __ATOMIC_RELAXED);
	free(e);
}

static int check_name(const char *name)
{
	return strlen(name) > HMMFS_NAME_MAX ? -ENAMETOOLONG : 0;
}

static void nlink_add(struct hmmfs_inode *inode, int64_t delta)
{
	pthread_mutex_lock(&hmmfs.ref_lock);
	inode->nlink = (uint64_t)((int64_t)inode->nlink + delta);
	pthread_mutex_unlock(&hmmfs.ref_lock);
}

/*
 * Reply with an entry; if the reply cannot be delivered (the request was
 * interrupted) the kernel never learns of the inode, so undo the lookup
 * that hmmfs_entry_fill() counted.
 */
static void reply_entry(fuse_req_t req, const struct fuse_entry_param *e)
{
	if (fuse_reply_entry(req, e) != 0 && e->ino)
		hmmfs_inode_unref(hmmfs_inode_get(e->ino), 1, 0, 0);
}

void hmmfs_ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct hmmfs_inode *dir = hmmfs_inode_get(parent);
	struct fuse_entry_param e;
	struct hmmfs_dirent *d;
	int err = check_name(name);

	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	if (!S_ISDIR(dir->type)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	pthread_rwlock_rdlock(&hmmfs.ns_lock);
	if (!strcmp(name, ".") || !strcmp(name, "..")) {
		hmmfs_entry_fill(name[1] ? dir->dir.parent : dir, &e);
		pthread_rwlock_unlock(&hmmfs.ns_lock);
		reply_entry(req, &e);
		return;
	}
	d = dir_find(&dir->dir, name);
	if (!d) {
		pthread_rwlock_unlock(&hmmfs.ns_lock);
		/* A negative entry: the kernel caches the absence. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = hmmfs.timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	hmmfs_entry_fill(d->inode, &e);
	pthread_rwlock_unlock(&hmmfs.ns_lock);
	reply_entry(req, &e);
}

/*
 * Create a node of any type under parent and fill the reply entry.
 * For regular files opened by create(), *existing reports that the name
 * already named a regular file (not O_EXCL) and e describes it.
 * Context: takes fs->ns_lock for writing.
 * Return: 0 or a negative errno.
 */
static int make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev, const char *target,
		     struct fuse_entry_param *e, struct hmmfs_inode **out)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct hmmfs_inode *dir = hmmfs_inode_get(parent);
	struct hmmfs_inode *inode = NULL;
	struct hmmfs_dirent *d;
	gid_t gid = ctx->gid;
	int err = check_name(name);

	if (err)
		return err;
	if (!S_ISDIR(dir->type))
		return -ENOTDIR;
	if (target && strlen(target) > HMMFS_SYMLINK_MAX)
		return -ENAMETOOLONG;

	pthread_rwlock_wrlock(&hmmfs.ns_lock);
	if (dir_find(&dir->dir, name)) {
		err = -EEXIST;
		goto out_unlock;
	}
	/* A removed directory (still open somewhere) takes no new names. */
	pthread_mutex_lock(&hmmfs.ref_lock);
	err = dir->nlink == 0 ? -ENOENT : 0;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	if (err)
		goto out_unlock;
	pthread_mutex_lock(&dir->attr_lock);
	if (dir->mode & S_ISGID) {
		/* BSD group semantics in a setgid directory, as on every Linux fs. */
		gid = dir->gid;
		if (S_ISDIR(mode))
			mode |= S_ISGID;
	}
	pthread_mutex_unlock(&dir->attr_lock);

	err = dir_reserve(&dir->dir);
	if (err)
		goto out_unlock;
	err = hmmfs_inode_new(mode, ctx->uid, gid, rdev, &inode);
	if (err)
		goto out_unlock;
	if (S_ISDIR(mode)) {
		err = hmmfs_dir_init(inode, dir);
	} else if (S_ISLNK(mode)) {
		inode->symlink = strdup(target);
		err = inode->symlink ? 0 : -ENOMEM;
	}
	d = err ? NULL : dirent_new(name, inode);
	if (!d) {
		err = err ? err : -ENOMEM;
		goto out_free;
	}
	dir_insert(&dir->dir, d);
	if (S_ISDIR(mode)) {
		inode->nlink = 2; /* not yet visible to others: no ref_lock needed */
		nlink_add(dir, 1);
		dir->dir.nsubdirs++;
	} else {
		inode->nlink = 1;
	}
	hmmfs_touch(dir, true, true);
	hmmfs_entry_fill(inode, e);
	pthread_rwlock_unlock(&hmmfs.ns_lock);
	if (out)
		*out = inode;
	return 0;

out_free:
	hmmfs_inode_free(inode);
out_unlock:
	pthread_rwlock_unlock(&hmmfs.ns_lock);
	return err;
}

static void reply_made(fuse_req_t req, int err, struct fuse_entry_param *e)
{
	if (err)
		fuse_reply_err(req, -err);
	else
		reply_entry(req, e);
}

void hmmfs_ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	int err = make_node(req, parent, name, S_IFDIR | (mode & 07777), 0, NULL, &e, NULL);

	reply_made(req, err, &e);
}

void hmmfs_ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev)
{
	struct fuse_entry_param e;
	int err;

	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFIFO: case S_IFSOCK: case S_IFCHR: case S_IFBLK:
		break;
	case 0:
		mode |= S_IFREG;
		break;
	default:
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!S_ISCHR(mode) && !S_ISBLK(mode))
		rdev = 0;
	err = make_node(req, parent, name, mode, rdev, NULL, &e, NULL);
	reply_made(req, err, &e);
}

void hmmfs_ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name)
{
	struct fuse_entry_param e;
	int err = make_node(req, parent, name, S_IFLNK | 0777, 0, link, &e, NULL);

	reply_made(req, err, &e);
}

void hmmfs_ll_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct hmmfs_inode *inode;
	int err = make_node(req, parent, name, S_IFREG | (mode & 07777), 0, NULL, &e, &inode);

	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	pthread_mutex_lock(&hmmfs.ref_lock);
	inode->nopen++;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	fi->keep_cache = 1;
	fi->fh = hmmfs_fh_of_flags(fi->flags);
	if (fuse_reply_create(req, &e, fi) != 0) {
		/* The opener is gone: undo the open and the lookup. */
		hmmfs_inode_unref(inode, 1, 1, 0);
	}
}

void hmmfs_ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);

	if (!S_ISLNK(inode->type)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_readlink(req, inode->symlink);
}

void hmmfs_ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	struct hmmfs_inode *dir = hmmfs_inode_get(newparent);
	struct fuse_entry_param e;
	struct hmmfs_dirent *d;
	int err = check_name(newname);

	if (err)
		goto out;
	if (S_ISDIR(inode->type)) {
		err = -EPERM;
		goto out;
	}
	if (!S_ISDIR(dir->type)) {
		err = -ENOTDIR;
		goto out;
	}
	pthread_rwlock_wrlock(&hmmfs.ns_lock);
	if (dir_find(&dir->dir, newname)) {
		err = -EEXIST;
		goto out_unlock;
	}
	pthread_mutex_lock(&hmmfs.ref_lock);
	/* An unlinked file cannot get a name back, as in the VFS. */
	err = inode->nlink == 0 || dir->nlink == 0 ? -ENOENT : 0;
	pthread_mutex_unlock(&hmmfs.ref_lock);
	if (err)
		goto out_unlock;
	err = dir_reserve(&dir->dir);
	if (err)
		goto out_unlock;
	d = dirent_new(newname, inode);
	if (!d) {
		err = -ENOMEM;
		goto out_unlock;
	}
	dir_insert(&dir->dir, d);
	nlink_add(inode, 1);
	hmmfs_touch(inode, false, true);
	hmmfs_touch(dir, true, true);
	hmmfs_entry_fill(inode, &e);
out_unlock:
	pthread_rwlock_unlock(&hmmfs.ns_lock);
out:
	reply_made(req, err, &e);
}

/* Remove a name; for rmdir the target must be an empty directory. */
static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, bool rmdir)
{
	struct hmmfs_inode *dir = hmmfs_inode_get(parent);
	struct hmmfs_inode *inode;
	struct hmmfs_dirent *d;
	int err = check_name(name);

	if (err)
		goto out;
	if (!S_ISDIR(dir->type)) {
		err = -ENOTDIR;
		goto out;
	}
	pthread_rwlock_wrlock(&hmmfs.ns_lock);
	d = dir_find(&dir->dir, name);
	if (!d) {
		err = -ENOENT;
		goto out_unlock;
	}
	inode = d->inode;
	if (rmdir && !S_ISDIR(inode->type))
		err = -ENOTDIR;
	else if (!rmdir && S_ISDIR(inode->type))
		err = -EISDIR;
	else if (rmdir && inode->dir.nentries)
		err = -ENOTEMPTY;
	if (err)
		goto out_unlock;
	dir_remove(&dir->dir, d);
	if (rmdir) {
		nlink_add(dir, -1);
		dir->dir.nsubdirs--;
	}
	hmmfs_touch(dir, true, true);
	hmmfs_touch(inode, false, true);
	pthread_rwlock_unlock(&hmmfs.ns_lock);
	hmmfs_inode_unref(inode, 0, 0, rmdir ? 2 : 1);
	fuse_reply_err(req, 0);
	return;

out_unlock:
	pthread_rwlock_unlock(&hmmfs.ns_lock);
out:
	fuse_reply_err(req, -err);
}

void hmmfs_ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, false);
}

void hmmfs_ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, true);
}

/* Is dir equal to or below ancestor?  Context: fs->ns_lock held. */
static bool is_within(struct hmmfs_inode *dir, struct hmmfs_inode *ancestor)
{
	for (;;) {
		if (dir == ancestor)
			return true;
		if (dir == hmmfs.root)
			return false;
		dir = dir->dir.parent;
	}
}

/* A directory moves from one parent to another: fix "..", and nlinks. */
static void move_dir(struct hmmfs_inode *inode, struct hmmfs_inode *from,
		     struct hmmfs_inode *to)
{
	if (!S_ISDIR(inode->type) || from == to)
		return;
	inode->dir.parent = to;
	nlink_add(from, -1);
	from->dir.nsubdirs--;
	nlink_add(to, 1);
	to->dir.nsubdirs++;
}

void hmmfs_ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct hmmfs_inode *odir = hmmfs_inode_get(parent);
	struct hmmfs_inode *ndir = hmmfs_inode_get(newparent);
	struct hmmfs_inode *src, *dst = NULL;
	struct hmmfs_dirent *sd, *dd, *nd = NULL;
	int err = 0;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = check_name(name) ?: check_name(newname);
	if (!err && (!S_ISDIR(odir->type) || !S_ISDIR(ndir->type)))
		err = -ENOTDIR;
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}

	pthread_rwlock_wrlock(&hmmfs.ns_lock);
	sd = dir_find(&odir->dir, name);
	if (!sd) {
		err = -ENOENT;
		goto out_unlock;
	}
	src = sd->inode;
	dd = dir_find(&ndir->dir, newname);
	dst = dd ? dd->inode : NULL;

	if (flags & RENAME_EXCHANGE) {
		if (!dd) {
			err = -ENOENT;
			goto out_unlock;
		}
		if ((S_ISDIR(src->type) && odir != ndir && is_within(ndir, src)) ||
		    (S_ISDIR(dst->type) && odir != ndir && is_within(odir, dst))) {
			err = -EINVAL;
			goto out_unlock;
		}
		sd->inode = dst;
		dd->inode = src;
		move_dir(src, odir, ndir);
		move_dir(dst, ndir, odir);
		hmmfs_touch(dst, false, true);
		dst = NULL; /* nothing is released */
		goto out_done;
	}

	if (dd) {
		if (flags & RENAME_NOREPLACE) {
			err = -EEXIST;
			goto out_unlock;
		}
		if (dst == src)
			goto out_unlock; /* two links to one file: nothing to do */
		if (S_ISDIR(src->type) && !S_ISDIR(dst->type))
			err = -ENOTDIR;
		else if (!S_ISDIR(src->type) && S_ISDIR(dst->type))
			err = -EISDIR;
		else if (S_ISDIR(dst->type) && dst->dir.nentries)
			err = -ENOTEMPTY;
		if (err)
			goto out_unlock;
	}
	if (S_ISDIR(src->type) && odir != ndir && is_within(ndir, src)) {
		err = -EINVAL;
		goto out_unlock;
	}
	if (!dd) {
		err = dir_reserve(&ndir->dir);
		if (!err && !(nd = dirent_new(newname, src)))
			err = -ENOMEM;
		if (err)
			goto out_unlock;
	}
	/* Nothing can fail from here on. */
	if (dd) {
		dd->inode = src;
		if (S_ISDIR(dst->type)) {
			nlink_add(ndir, -1);
			ndir->dir.nsubdirs--;
		}
		hmmfs_touch(dst, false, true);
	} else {
		dir_insert(&ndir->dir, nd);
	}
	dir_remove(&odir->dir, sd);
	move_dir(src, odir, ndir);
out_done:
	hmmfs_touch(src, false, true);
	hmmfs_touch(odir, true, true);
	if (ndir != odir)
		hmmfs_touch(ndir, true, true);
out_unlock:
	pthread_rwlock_unlock(&hmmfs.ns_lock);
	if (!err && dst)
		hmmfs_inode_unref(dst, 0, 0, S_ISDIR(dst->type) ? 2 : 1);
	fuse_reply_err(req, -err);
}

void hmmfs_ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct hmmfs_inode *dir = hmmfs_inode_get(ino);
	struct stat st;
	size_t pos = 0, n;
	char *buf;

	if (!S_ISDIR(dir->type)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memset(&st, 0, sizeof(st));
	pthread_rwlock_rdlock(&hmmfs.ns_lock);
	if (off < 1) {
		st.st_ino = dir->ino;
		st.st_mode = S_IFDIR;
		n = fuse_add_direntry(req, buf + pos, size - pos, ".", &st, 1);
		if (n > size - pos)
			goto out;
		pos += n;
	}
	if (off < 2) {
		st.st_ino = dir->dir.parent->ino;
		st.st_mode = S_IFDIR;
		n = fuse_add_direntry(req, buf + pos, size - pos, "..", &st, 2);
		if (n > size - pos)
			goto out;
		pos += n;
	}
	for (uint64_t i = slot_after(&dir->dir, (uint64_t)off); i < dir->dir.norder; i++) {
		struct hmmfs_dirent *d = dir->dir.order[i].d;

		if (!d)
			continue;
		st.st_ino = d->inode->ino;
		st.st_mode = d->inode->type;
		n = fuse_add_direntry(req, buf + pos, size - pos, d->name, &st, (off_t)d->cookie);
		if (n > size - pos)
			break;
		pos += n;
	}
out:
	pthread_rwlock_unlock(&hmmfs.ns_lock);
	hmmfs_accessed(dir);
	fuse_reply_buf(req, buf, pos);
	free(buf);
}
