/* SPDX-License-Identifier: MIT */
/*
 * Extended attributes, in the user, trusted and security namespaces.
 *
 * The kernel checks names (length, namespace permissions, user.* only on
 * regular files and directories) before a request arrives; the daemon
 * checks the namespace again, the create/replace flags and each inode's
 * budget.  All state is protected by inode->attr_lock.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/limits.h>
#include <sys/xattr.h>

static const char *const namespaces[] = { "user.", "trusted.", "security." };

/* Return: 0, -EINVAL for a namespace with no name, -EOPNOTSUPP for another namespace. */
static int check_namespace(const char *name)
{
	for (size_t i = 0; i < sizeof(namespaces) / sizeof(namespaces[0]); i++) {
		size_t n = strlen(namespaces[i]);
		if (!strncmp(name, namespaces[i], n))
			return name[n] ? 0 : -EINVAL;
	}
	return -EOPNOTSUPP;
}

/*
 * trusted.* is for CAP_SYS_ADMIN only.  The kernel checks get and set, but
 * passes the daemon's list unfiltered, so listxattr hides the names from
 * everyone but root, as the kernel does for local filesystems.
 */
static bool listed_for(const struct hmmfs_xattr *x, const struct fuse_ctx *ctx)
{
	return ctx->uid == 0 || strncmp(x->name, "trusted.", 8) != 0;
}

static struct hmmfs_xattr **xattr_find(struct hmmfs_inode *inode, const char *name)
{
	struct hmmfs_xattr **pp;

	for (pp = &inode->xattrs; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->name, name))
			return pp;
	return NULL;
}

static size_t xattr_cost(const struct hmmfs_xattr *x)
{
	return strlen(x->name) + 1 + x->size;
}

void hmmfs_ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		       const char *value, size_t size, int flags)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	size_t namelen = strlen(name);
	struct hmmfs_xattr **pp, *x, *old;
	size_t budget_after;
	int err = 0;

	err = check_namespace(name);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	if (namelen > XATTR_NAME_MAX) {
		fuse_reply_err(req, ERANGE);
		return;
	}
	if (size > XATTR_SIZE_MAX) {
		fuse_reply_err(req, E2BIG);
		return;
	}
	if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	x = malloc(sizeof(*x) + namelen + 1);
	if (!x || !(x->value = malloc(size ? size : 1))) {
		free(x);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(x->name, name, namelen + 1);
	memcpy(x->value, value, size);
	x->size = size;

	pthread_mutex_lock(&inode->attr_lock);
	pp = xattr_find(inode, name);
	old = pp ? *pp : NULL;
	if (old && (flags & XATTR_CREATE))
		err = -EEXIST;
	else if (!old && (flags & XATTR_REPLACE))
		err = -ENODATA;
	if (!err) {
		budget_after = inode->xattr_bytes + xattr_cost(x) - (old ? xattr_cost(old) : 0);
		if (budget_after > HMMFS_XATTR_MAX_TOTAL)
			err = -ENOSPC;
	}
	if (!err) {
		if (old) {
			x->next = old->next;
			*pp = x;
		} else {
			x->next = inode->xattrs;
			inode->xattrs = x;
		}
		inode->xattr_bytes = budget_after;
		hmmfs_now(&inode->ctime);
	}
	pthread_mutex_unlock(&inode->attr_lock);
	if (err || old) {
		struct hmmfs_xattr *gone = err ? x : old;
		free(gone->value);
		free(gone);
	}
	fuse_reply_err(req, -err);
}

void hmmfs_ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	struct hmmfs_xattr **pp;
	char *value = NULL;
	size_t vsize = 0;
	int err = 0;

	err = check_namespace(name);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	/* Copy out under the lock: after the reply the inode may be gone. */
	pthread_mutex_lock(&inode->attr_lock);
	pp = xattr_find(inode, name);
	if (pp) {
		vsize = (*pp)->size;
		if (size >= vsize && vsize) {
			value = malloc(vsize);
			if (value)
				memcpy(value, (*pp)->value, vsize);
			else
				err = ENOMEM;
		}
	}
	pthread_mutex_unlock(&inode->attr_lock);
	if (!pp)
		fuse_reply_err(req, ENODATA);
	else if (err)
		fuse_reply_err(req, err);
	else if (size == 0)
		fuse_reply_xattr(req, vsize);
	else if (size < vsize)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, vsize);
	free(value);
}

void hmmfs_ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	size_t total = 0;
	char *buf, *p;

	pthread_mutex_lock(&inode->attr_lock);
	for (struct hmmfs_xattr *x = inode->xattrs; x; x = x->next)
		if (listed_for(x, ctx))
			total += strlen(x->name) + 1;
	if (size == 0) {
		pthread_mutex_unlock(&inode->attr_lock);
		fuse_reply_xattr(req, total);
		return;
	}
	if (size < total) {
		pthread_mutex_unlock(&inode->attr_lock);
		fuse_reply_err(req, ERANGE);
		return;
	}
	buf = malloc(total ? total : 1);
	if (!buf) {
		pthread_mutex_unlock(&inode->attr_lock);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p = buf;
	for (struct hmmfs_xattr *x = inode->xattrs; x; x = x->next) {
		size_t n = strlen(x->name) + 1;
		if (!listed_for(x, ctx))
			continue;
		memcpy(p, x->name, n);
		p += n;
	}
	pthread_mutex_unlock(&inode->attr_lock);
	fuse_reply_buf(req, buf, total);
	free(buf);
}

void hmmfs_ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);
	struct hmmfs_xattr **pp, *x = NULL;
	int err;

	err = check_namespace(name);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	pthread_mutex_lock(&inode->attr_lock);
	pp = xattr_find(inode, name);
	if (pp) {
		x = *pp;
		*pp = x->next;
		inode->xattr_bytes -= xattr_cost(x);
		hmmfs_now(&inode->ctime);
	}
	pthread_mutex_unlock(&inode->attr_lock);
	if (!x) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	free(x->value);
	free(x);
	fuse_reply_err(req, 0);
}

void hmmfs_xattr_free_all(struct hmmfs_inode *inode)
{
	struct hmmfs_xattr *x, *next;

	for (x = inode->xattrs; x; x = next) {
		next = x->next;
		free(x->value);
		free(x);
	}
	inode->xattrs = NULL;
	inode->xattr_bytes = 0;
}
