/* SPDX-License-Identifier: MIT */
/*
 * hmmfs.h - the hmmfs daemon's private interfaces.
 *
 * hmmfs is an in-memory filesystem on the libfuse low-level API.  The kernel
 * keeps the page cache and enforces permissions (default_permissions is
 * always on); the daemon holds the namespace, the attributes and the data,
 * which lives in page-sized pieces in host RAM or on simulated devices.
 *
 * Lock order (outermost first); a thread holding one lock takes only locks
 * further down the list:
 *   1. fs->ns_lock       rwlock: every directory's entries, dir->parent,
 *                        and the set of names.  Writers are the operations
 *                        that change the namespace.
 *   2. inode->data_lock  rwlock: a regular file's size, pages, the pages'
 *                        location and state, and its counters.  Moving a
 *                        page, DMA included, happens under it for writing.
 *                        When two files are locked (copy_file_range), the
 *                        one at the lower address is locked first; eviction
 *                        takes a victim file's lock with no other held.
 *   3. inode->attr_lock  mutex: mode, ownership, times, rdev, xattrs.
 *   4. device lru_lock   (libhmm) a device's LRU list.  Eviction pins the
 *                        owner of a page while holding it, so:
 *   5. fs->ref_lock      mutex: nlookup, nopen, nlink and npin of every
 *                        inode, and the list of all inodes.
 *   6. migration queue   (migrate.c) leaf.
 *   7. DMA fence and queue locks, pool locks  (libhmm) leaf locks.
 *
 * Never held while calling fuse_lowlevel_notify_*: any of the above.  No
 * FUSE worker sends notifications: an invalidation writes dirty pages back
 * through workers.  The migration thread does (migrate.c), and the
 * invalidator (invalidate.c) does for handlers that reply after it: an
 * FSYNC that the migration thread caused, and a FALLOCATE or
 * COPY_FILE_RANGE that changed bytes behind the page cache (fence.c).  For
 * those the kernel holds the file's i_rwsem until the reply, so no write(2)
 * is half done meanwhile.
 *
 * Lifetime, all counts read under fs->ref_lock:
 *  - An inode's data is released (its pages go back to the pool and it stops
 *    counting against nr_inodes) as soon as nlink == 0 (no name) and
 *    nopen == 0 (no open file handle, and so no mapping), as on tmpfs.
 *  - The struct itself is freed when, in addition, nlookup == 0 (the kernel
 *    forgot it, which it does lazily) and npin == 0 (no handler still uses it).
 *
 * The kernel keeps a node id valid while a request on it is pending, but no
 * longer: once a handler has replied, another thread may serve the FORGET
 * that frees the inode.  So a handler never touches an inode after its reply
 * unless it pinned the inode first (hmmfs_inode_pin).
 */
#ifndef HMMFS_H
#define HMMFS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "hmm-internal.h"

/* The largest file hmmfs stores: 2^52 bytes (4 PiB), like a large tmpfs. */
#define HMMFS_MAX_FILESIZE (1ULL << 52)
#define HMMFS_NAME_MAX 255
#define HMMFS_SYMLINK_MAX 4095
/* Extended attributes: per-inode budget of names plus values. */
#define HMMFS_XATTR_MAX_TOTAL (1u << 20)

struct hmmfs_inode;

/* A name in a directory. */
struct hmmfs_dirent {
	struct hmmfs_dirent *hnext; /* hash chain */
	uint64_t cookie;            /* readdir offset of the entry after this one */
	struct hmmfs_inode *inode;
	uint32_t hash;
	uint16_t namelen;
	char name[];
};

/* A position in a directory's readdir order; d is NULL once removed. */
struct hmmfs_dirslot {
	uint64_t cookie;
	struct hmmfs_dirent *d;
};

/*
 * A directory: a hash table for lookup and an array ordered by cookie for
 * readdir.  Cookies only grow, so a readdir offset stays valid whatever is
 * added or removed; removed entries leave holes (d == NULL, cookie kept) in
 * order[] until a compaction, which keeps the order.
 * Invariant: nentries == number of slots with d != NULL <= norder <= order_cap.
 * All protected by fs->ns_lock.
 */
struct hmmfs_dir {
	struct hmmfs_dirent **buckets;
	uint32_t nbuckets;          /* power of two */
	uint64_t nentries;
	struct hmmfs_dirslot *order;
	uint64_t norder;            /* used slots of order[], holes included */
	uint64_t order_cap;
	uint64_t next_cookie;
	uint64_t nsubdirs;
	struct hmmfs_inode *parent; /* the root is its own parent */
};

struct hmmfs_xattr {
	struct hmmfs_xattr *next;
	size_t size;
	char *value;
	char name[];
};

struct hmmfs_inode {
	uint64_t ino;        /* st_ino; the FUSE node id is the pointer */
	mode_t type;         /* S_IFMT bits of mode, immutable: read without locks */
	uint64_t generation;

	/* protected by attr_lock */
	pthread_mutex_t attr_lock;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	struct timespec atime, mtime, ctime;
	struct hmmfs_xattr *xattrs;
	size_t xattr_bytes;

	/* protected by fs->ref_lock */
	uint64_t nlink;
	uint64_t nlookup;
	uint64_t nopen;
	uint64_t npin;
	bool released;       /* data released; no longer counted in ninodes */
	struct hmmfs_inode *all_next, **all_pprev;

	union {
		struct {                      /* S_IFREG; protected by data_lock */
			uint64_t size;
			struct hmm__radix pages;  /* page index -> struct hmm__page */
			uint64_t pages_to_device, pages_to_host;
			uint64_t cpu_faults, evictions;
			/* bytes being dropped from the page cache (fence.c) */
			uint64_t fence_off, fence_end;
			unsigned nfences;
			/* its own memory on each device (pool.c, owned memory),
			 * so that clients can map its device pages; NULL until
			 * a page first moves to a device */
			struct hmm__pool_owner **devmem;
			/* grants of that memory (session.c); atomic */
			uint32_t shared;
			/* pages whose device memory is being taken from the
			 * sessions (hmmfs_pages_unshare): none is handed out */
			uint64_t unshare_first, unshare_last;
			unsigned nunshares;
		} file;
		struct hmmfs_dir dir;         /* S_IFDIR; protected by fs->ns_lock */
		char *symlink;                /* S_IFLNK; immutable */
	};
	pthread_rwlock_t data_lock;
};

/* The most devices one mount can have. */
#define HMMFS_MAX_DEVICES 64

struct hmmfs_fs {
	struct fuse_session *se;
	char *mountpoint;          /* absolute, for open_by_handle_at; or NULL */
	struct hmm__pool host;     /* host RAM holding file data */
	int host_node;             /* NUMA node of host RAM, or -1 */
	unsigned ndevices;
	struct hmm__device *devices[HMMFS_MAX_DEVICES];
	bool evict_lru;            /* evict=lru (else none) */
	struct hmm__mem mem;       /* host RAM and the devices, for residency */
	size_t page_size;
	unsigned page_shift;
	char *zero_page;           /* page_size zero bytes, for replies over holes */
	uint64_t max_inodes;
	double timeout;            /* entry and attribute cache timeout, seconds */

	pthread_rwlock_t ns_lock;
	struct hmmfs_inode *root;

	pthread_mutex_t ref_lock;
	struct hmmfs_inode *all;   /* every live inode; protected by ref_lock */
	uint64_t ninodes;          /* protected by ref_lock */
	uint64_t next_ino;         /* protected by ref_lock */
};

extern struct hmmfs_fs hmmfs;

/* The index of the page holding byte off. */
static inline uint64_t page_index(uint64_t off)
{
	return off >> hmmfs.page_shift;
}

/* The index of the last page of [off, off + len), len > 0; saturates. */
static inline uint64_t last_page_index(uint64_t off, uint64_t len)
{
	return (len > UINT64_MAX - off ? UINT64_MAX : off + len - 1) >> hmmfs.page_shift;
}

/* A file handle's fh: what the open allowed (FUSE passes no open flags with
 * later requests, such as an ioctl). */
#define HMMFS_FH_WRITABLE 1u
static inline uint64_t hmmfs_fh_of_flags(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY ? HMMFS_FH_WRITABLE : 0;
}

/* session.c: processes attached to the devices (see the top of session.c) */
struct hmm_attach;
struct hmm_grant;
struct hmm_device_pages;
int hmmfs_session_set_policy(const char *attach); /* "owner" (or NULL), "all"; else -EINVAL */
int hmmfs_session_start(void);
void hmmfs_session_stop(void);
void hmmfs_session_ioctl_attach(fuse_req_t req, const struct hmm_attach *in);
void hmmfs_session_ioctl_grant(fuse_req_t req, struct hmmfs_inode *f,
			       const struct fuse_file_info *fi, const struct hmm_grant *in);
void hmmfs_session_ioctl_device_pages(fuse_req_t req, struct hmmfs_inode *f,
				      const struct hmm_device_pages *in);
/* Whether any session can have f's device memory mapped.  Context: any;
 * under f->data_lock, 0 stays 0 until the lock is dropped. */
bool hmmfs_session_shared(const struct hmmfs_inode *f);
/*
 * hmmfs_session_invalidate() - tell every session holding a grant of f's
 * memory on device loc (every device if loc < 0) that pages [first, last]
 * are going, and, if wait, wait until each has answered (or ended, or was
 * ended for not answering in time).
 * Context: no data_lock held (see the top of session.c); the pages must be
 * fenced so that nobody is handed their memory meanwhile.
 */
void hmmfs_session_invalidate(struct hmmfs_inode *f, int loc, uint64_t first, uint64_t last,
			      bool wait);

/* inode.c */
int hmmfs_inode_new(mode_t mode, uid_t uid, gid_t gid, dev_t rdev,
		    struct hmmfs_inode **out);
void hmmfs_inode_free(struct hmmfs_inode *inode);
struct hmmfs_inode *hmmfs_inode_get(fuse_ino_t ino);
void hmmfs_inode_unref(struct hmmfs_inode *inode, uint64_t nlookup,
		       uint64_t nopen, uint64_t nlink);
void hmmfs_inode_pin(struct hmmfs_inode *inode);
void hmmfs_inode_unpin(struct hmmfs_inode *inode);
void hmmfs_inode_stat(struct hmmfs_inode *inode, struct stat *st);
void hmmfs_entry_fill(struct hmmfs_inode *inode, struct fuse_entry_param *e);
void hmmfs_now(struct timespec *ts);
void hmmfs_touch(struct hmmfs_inode *inode, bool mtime, bool ctime);
void hmmfs_accessed(struct hmmfs_inode *inode);
void hmmfs_destroy_all(void);
void hmmfs_ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void hmmfs_ll_forget_multi(fuse_req_t req, size_t count,
			   struct fuse_forget_data *forgets);
void hmmfs_ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hmmfs_ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		      int to_set, struct fuse_file_info *fi);
void hmmfs_ll_statfs(fuse_req_t req, fuse_ino_t ino);

/* dir.c */
int hmmfs_dir_init(struct hmmfs_inode *dir, struct hmmfs_inode *parent);
void hmmfs_dir_free(struct hmmfs_inode *dir);
void hmmfs_ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void hmmfs_ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void hmmfs_ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev);
void hmmfs_ll_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi);
void hmmfs_ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name);
void hmmfs_ll_readlink(fuse_req_t req, fuse_ino_t ino);
void hmmfs_ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname);
void hmmfs_ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void hmmfs_ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void hmmfs_ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname, unsigned int flags);
void hmmfs_ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi);

/*
 * pages.c: a regular file's data.  Callers hold inode->data_lock, for
 * writing when the function changes the file or may move pages (every
 * function that touches page contents brings private-device pages back to
 * host RAM first: that is a CPU access).
 */
int hmmfs_pages_fault_in(struct hmmfs_inode *f, uint64_t off, size_t size);
int hmmfs_pages_move(struct hmmfs_inode *f, struct hmm__page **pages, size_t n, int dest);
bool hmmfs_pages_need_fault(struct hmmfs_inode *f, uint64_t off, size_t size);
int hmmfs_pages_write(struct hmmfs_inode *f, const char *buf, size_t size,
		      uint64_t off, bool writeback, size_t *written);
size_t hmmfs_pages_iov(struct hmmfs_inode *f, uint64_t off, size_t size,
		       struct iovec *iov, size_t max_iov);
int hmmfs_pages_read(struct hmmfs_inode *f, uint64_t off, size_t size, char *buf);
int hmmfs_pages_truncate(struct hmmfs_inode *f, uint64_t size);
int hmmfs_pages_punch(struct hmmfs_inode *f, uint64_t off, uint64_t len);
int hmmfs_pages_allocate(struct hmmfs_inode *f, uint64_t off, uint64_t len);
int64_t hmmfs_pages_seek(struct hmmfs_inode *f, uint64_t off, int whence);
void hmmfs_pages_free_all(struct hmmfs_inode *f);
/*
 * hmmfs_pages_unshare() - before pages [first, last] of f may leave a
 * device or be freed: take them from the sessions that may map them
 * (session.c), whether as device memory or through the CPU's mapping.  If
 * a session may, and a page of the range was handed out in place
 * (HMM_IOC_DEVICE_PAGES; pages.c, "Coherence") or all (pages are going
 * away wherever they are: truncation, punching), it fences the pages,
 * drops data_lock, invalidates and takes data_lock again, so the caller
 * must look at the pages only after it returns.
 * Context: f->data_lock held for writing.
 */
void hmmfs_pages_unshare(struct hmmfs_inode *f, uint64_t first, uint64_t last, bool all);
/* The same in two halves, for a caller that must drop data_lock between
 * the invalidation and its change (copy_file_range takes two files' locks):
 * the fence stays up until _end.  Return: whether _end is needed. */
bool hmmfs_pages_unshare_begin(struct hmmfs_inode *f, uint64_t first, uint64_t last, bool all);
void hmmfs_pages_unshare_end(struct hmmfs_inode *f);
/* Whether page index of f is fenced by hmmfs_pages_unshare.  Context:
 * f->data_lock held. */
bool hmmfs_pages_unshared(const struct hmmfs_inode *f, uint64_t index);
/* struct hmm__mem's owned(): the file's own memory on device loc, made on
 * first use.  Context: f->data_lock held for writing. */
struct hmm__pool_owner **hmmfs_pages_devmem(void *owner, int loc);
uint64_t hmmfs_pages_count(struct hmmfs_inode *f);
bool hmmfs_pages_range_is_hole(struct hmmfs_inode *f, uint64_t off, uint64_t len);

/*
 * invalidate.c: the invalidator, a thread that drops ranges from the page
 * cache for handlers that must reply only after that.
 */
struct hmmfs_inval_job {
	struct hmmfs_inval_job *next;          /* the invalidator's queue */
	fuse_ino_t ino;
	off_t off, len;
	void (*done)(struct hmmfs_inval_job *job); /* replies; may free job */
};
void hmmfs_invalidate_async(struct hmmfs_inval_job *job);
void hmmfs_invalidate_now(struct hmmfs_inval_job *job);
int hmmfs_invalidator_start(void);
void hmmfs_invalidator_stop(void);

/*
 * fence.c: bytes changed behind the page cache stay changed while the
 * kernel's stale copy of them is dropped.
 */
void hmmfs_fence_raise(struct hmmfs_inode *f, uint64_t off, uint64_t len);
void hmmfs_fence_lower_reply(fuse_req_t req, struct hmmfs_inode *f, fuse_ino_t ino,
			     uint64_t off, uint64_t len, bool copy);
int hmmfs_fence_writeback(struct hmmfs_inode *f, const char *buf, size_t size,
			  uint64_t off, size_t *written);

/* file.c */
void hmmfs_ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hmmfs_ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hmmfs_ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi);
void hmmfs_ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		    size_t size, off_t off, struct fuse_file_info *fi);
void hmmfs_ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi);
void hmmfs_ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			off_t length, struct fuse_file_info *fi);
void hmmfs_ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		    struct fuse_file_info *fi);
void hmmfs_ll_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			      struct fuse_file_info *fi_in, fuse_ino_t ino_out,
			      off_t off_out, struct fuse_file_info *fi_out,
			      size_t len, int flags);

/* migrate.c */
int hmmfs_migrate_start(void);
void hmmfs_migrate_refuse(void);
void hmmfs_migrate_stop(void);
bool hmmfs_migrate_fsync(fuse_req_t req, fuse_ino_t ino);
bool hmmfs_migrate_opened_by(pid_t pid);
void hmmfs_ll_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		    struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		    size_t in_bufsz, size_t out_bufsz);

/* xattr.c */
void hmmfs_ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		       const char *value, size_t size, int flags);
void hmmfs_ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void hmmfs_ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void hmmfs_ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void hmmfs_xattr_free_all(struct hmmfs_inode *inode);

#endif /* HMMFS_H */
