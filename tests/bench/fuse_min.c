/* SPDX-License-Identifier: MIT */
/*
 * fuse_min.c - the "FUSE ceiling" that `make bench` compares hmmfs against.
 *
 * A deliberately small in-memory filesystem on the libfuse 3 low-level API:
 * one flat root directory of regular files, each file a growable array of
 * 1 MiB chunks (a NULL chunk is a hole and reads as zeros).  It does just
 * what the benchmark needs and nothing clever, so whatever hmmfs loses
 * against it is overhead of hmmfs itself, not of FUSE.
 *
 * The settings match hmmfs wherever they change what the kernel asks of the
 * daemon: keep_cache on open, FUSE_CAP_AUTO_INVAL_DATA off, max_read and
 * max_write 1 MiB, default_permissions (the kernel then fetches a
 * directory's attributes again after each change to it), a getxattr
 * operation (hmmfs has extended attributes), and the multithreaded loop
 * configured through fuse_loop_cfg_create() with clone_fd 0 and the default
 * max_idle_threads.  Entries and attributes are cached for 1 s; the
 * benchmark's metadata rows drop the dentries first, so a daemon that
 * allows longer gains nothing there.
 *
 * Build: part of the tree (`make` builds tests/bench/fuse_min), or by hand:
 *   cc -O2 -o fuse_min fuse_min.c $(pkg-config --cflags --libs fuse3)
 * Run:   fuse_min [-f] [-s] [-o OPT] MOUNTPOINT;  fusermount3 -u MOUNTPOINT
 *
 * Locking: ns_lock guards the root's names, every node's nlookup, nopen and
 * linked flag; node->lock guards the node's size, chunks and times.  A
 * thread holding node->lock never takes ns_lock.  The FUSE node id of a file
 * is the address of its struct node, valid while the kernel holds a lookup
 * reference or the file is open.
 */
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_SHIFT 20
#define CHUNK_SIZE ((size_t)1 << CHUNK_SHIFT)
#define IO_MAX CHUNK_SIZE              /* max_read and max_write */
#define MAX_FILESIZE ((uint64_t)1 << 44)
#define NBUCKETS 65536u
#define TIMEOUT 1.0

struct node {
	uint64_t st_ino;
	mode_t mode;
	uid_t uid;
	gid_t gid;

	/* protected by ns_lock */
	uint64_t nlookup;
	uint64_t nopen;
	bool linked;
	struct node *hnext;     /* name hash chain */
	size_t slot;            /* index in dirents[], the readdir order */
	char *name;

	/* protected by lock */
	pthread_rwlock_t lock;
	uint64_t size;
	char **chunks;
	size_t nchunks;         /* slots of chunks[] */
	struct timespec atime, mtime, ctime;
};

static struct node root;
static pthread_mutex_t ns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node *buckets[NBUCKETS];
/* Files of the root in creation order; unlinked ones leave a NULL slot so
 * that readdir offsets stay valid.  Offsets 1 and 2 are "." and "..", the
 * entry in slot i has offset i + 3. */
static struct node **dirents;
static size_t ndirents, dirents_cap;
static uint64_t next_ino = 2;
static uint64_t nfiles;
static char zeros[CHUNK_SIZE];

static struct node *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &root : (struct node *)(uintptr_t)ino;
}

static fuse_ino_t ino_of(struct node *n)
{
	return n == &root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

/* Context: ns_lock held. */
static struct node *name_find(const char *name)
{
	struct node *n = buckets[name_hash(name) % NBUCKETS];

	while (n && strcmp(n->name, name) != 0)
		n = n->hnext;
	return n;
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

static void node_stat(struct node *n, struct stat *st)
{
	uint64_t entries = 0;

	if (n == &root) {
		pthread_mutex_lock(&ns_lock);
		entries = nfiles;
		pthread_mutex_unlock(&ns_lock);
	}
	memset(st, 0, sizeof(*st));
	st->st_ino = n->st_ino;
	st->st_mode = n->mode;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_blksize = 4096;
	pthread_rwlock_rdlock(&n->lock);
	st->st_nlink = n == &root ? 2 : 1;
	st->st_size = n == &root ? (off_t)(40 + 20 * entries) : (off_t)n->size;
	st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
	pthread_rwlock_unlock(&n->lock);
}

static void entry_fill(struct node *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = ino_of(n);
	e->generation = 1;
	e->attr_timeout = TIMEOUT;
	e->entry_timeout = TIMEOUT;
	node_stat(n, &e->attr);
}

/* A zero-filled chunk, mapped up front: one call instead of a page fault
 * per 4 KiB when the write lands in it. */
static char *chunk_alloc(void)
{
	void *p = mmap(NULL, CHUNK_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void chunk_free(char *c)
{
	if (c)
		munmap(c, CHUNK_SIZE);
}

/* Set the size; drops chunks past it and zeroes the tail of the last one so
 * that a later extension reads zeros.  Context: n->lock held for writing. */
static void node_truncate(struct node *n, uint64_t size)
{
	size_t keep = (size_t)((size + CHUNK_SIZE - 1) >> CHUNK_SHIFT);

	for (size_t i = keep; i < n->nchunks; i++) {
		chunk_free(n->chunks[i]);
		n->chunks[i] = NULL;
	}
	if (size < n->size && (size & (CHUNK_SIZE - 1)) && keep > 0 && n->chunks[keep - 1]) {
		size_t off = size & (CHUNK_SIZE - 1);
		memset(n->chunks[keep - 1] + off, 0, CHUNK_SIZE - off);
	}
	n->size = size;
}

static void node_free(struct node *n)
{
	node_truncate(n, 0);
	free(n->chunks);
	free(n->name);
	pthread_rwlock_destroy(&n->lock);
	free(n);
}

/* Drop references; frees the node when nothing can reach it any more. */
static void node_unref(struct node *n, uint64_t nlookup, uint64_t nopen)
{
	bool dead;

	if (n == &root)
		return;
	pthread_mutex_lock(&ns_lock);
	n->nlookup -= nlookup;
	n->nopen -= nopen;
	dead = !n->linked && n->nlookup == 0 && n->nopen == 0;
	pthread_mutex_unlock(&ns_lock);
	if (dead)
		node_free(n);
}

static void fm_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	conn->max_write = IO_MAX;
	conn->max_read = IO_MAX;
	conn->max_readahead = IO_MAX;
}

static void fm_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct node *n;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	pthread_mutex_lock(&ns_lock);
	n = name_find(name);
	if (n)
		n->nlookup++;
	pthread_mutex_unlock(&ns_lock);
	if (!n) {
		/* A negative entry the kernel may cache for the same timeout. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	entry_fill(n, &e);
	fuse_reply_entry(req, &e);
}

static void fm_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_unref(node_of(ino), nlookup, 0);
	fuse_reply_none(req);
}

static void fm_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		node_unref(node_of(f[i].ino), f[i].nlookup, 0);
	fuse_reply_none(req);
}

static void fm_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	node_stat(node_of(ino), &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static void fm_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct timespec ts;
	struct stat st;

	now(&ts);
	if ((to_set & FUSE_SET_ATTR_SIZE) && n == &root) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size > MAX_FILESIZE) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	pthread_rwlock_wrlock(&n->lock);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		node_truncate(n, (uint64_t)attr->st_size);
		n->mtime = ts;
	}
	if (to_set & FUSE_SET_ATTR_MODE)
		n->mode = (n->mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & FUSE_SET_ATTR_UID)
		n->uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		n->gid = attr->st_gid;
	if (to_set & FUSE_SET_ATTR_ATIME)
		n->atime = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		n->atime = ts;
	if (to_set & FUSE_SET_ATTR_MTIME)
		n->mtime = attr->st_mtim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		n->mtime = ts;
	n->ctime = ts;
	pthread_rwlock_unlock(&n->lock);
	node_stat(n, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static void fm_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	struct node *n;
	uint32_t h;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	n = calloc(1, sizeof(*n));
	if (!n || !(n->name = strdup(name))) {
		free(n);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_rwlock_init(&n->lock, NULL);
	n->mode = S_IFREG | (mode & 07777);
	n->uid = ctx->uid;
	n->gid = ctx->gid;
	now(&n->mtime);
	n->atime = n->ctime = n->mtime;
	n->nlookup = 1;
	n->nopen = 1;
	n->linked = true;

	pthread_mutex_lock(&ns_lock);
	if (name_find(name)) {
		pthread_mutex_unlock(&ns_lock);
		node_free(n);
		fuse_reply_err(req, EEXIST);
		return;
	}
	if (ndirents == dirents_cap) {
		size_t cap = dirents_cap ? 2 * dirents_cap : 1024;
		struct node **d = realloc(dirents, cap * sizeof(*d));

		if (!d) {
			pthread_mutex_unlock(&ns_lock);
			node_free(n);
			fuse_reply_err(req, ENOSPC);
			return;
		}
		dirents = d;
		dirents_cap = cap;
	}
	n->st_ino = next_ino++;
	n->slot = ndirents;
	dirents[ndirents++] = n;
	h = name_hash(name) % NBUCKETS;
	n->hnext = buckets[h];
	buckets[h] = n;
	nfiles++;
	pthread_mutex_unlock(&ns_lock);

	pthread_rwlock_wrlock(&root.lock);
	root.mtime = root.ctime = n->mtime;
	pthread_rwlock_unlock(&root.lock);

	entry_fill(n, &e);
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) != 0)
		node_unref(n, 1, 1);
}

static void fm_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *n, **pp;
	struct timespec ts;
	bool dead;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	now(&ts);
	pthread_mutex_lock(&ns_lock);
	pp = &buckets[name_hash(name) % NBUCKETS];
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->hnext;
	n = *pp;
	if (!n) {
		pthread_mutex_unlock(&ns_lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	*pp = n->hnext;
	dirents[n->slot] = NULL;
	n->linked = false;
	nfiles--;
	dead = n->nlookup == 0 && n->nopen == 0;
	pthread_mutex_unlock(&ns_lock);

	pthread_rwlock_wrlock(&root.lock);
	root.mtime = root.ctime = ts;
	pthread_rwlock_unlock(&root.lock);
	if (dead) {
		node_free(n);
	} else {
		pthread_rwlock_wrlock(&n->lock);
		n->ctime = ts;
		pthread_rwlock_unlock(&n->lock);
	}
	fuse_reply_err(req, 0);
}

static void fm_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);

	if (n == &root && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	/* With FUSE_CAP_ATOMIC_O_TRUNC (a libfuse default) O_TRUNC arrives here. */
	if ((fi->flags & O_TRUNC) && n != &root) {
		pthread_rwlock_wrlock(&n->lock);
		node_truncate(n, 0);
		now(&n->mtime);
		n->ctime = n->mtime;
		pthread_rwlock_unlock(&n->lock);
	}
	pthread_mutex_lock(&ns_lock);
	n->nopen++;
	pthread_mutex_unlock(&ns_lock);
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) != 0)
		node_unref(n, 0, 1);
}

static void fm_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	node_unref(node_of(ino), 0, 1);
	fuse_reply_err(req, 0);
}

static void fm_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct iovec iov[IO_MAX / CHUNK_SIZE + 2];
	uint64_t pos = (uint64_t)off, end;
	int cnt = 0;

	if (size > IO_MAX)
		size = IO_MAX;
	/* The lock is held until the reply has been copied to the kernel. */
	pthread_rwlock_rdlock(&n->lock);
	end = pos + size < n->size ? pos + size : n->size;
	while (pos < end) {
		size_t ci = (size_t)(pos >> CHUNK_SHIFT);
		size_t co = (size_t)(pos & (CHUNK_SIZE - 1));
		size_t len = CHUNK_SIZE - co;

		if (len > end - pos)
			len = (size_t)(end - pos);
		iov[cnt].iov_base = ci < n->nchunks && n->chunks[ci] ? n->chunks[ci] + co : zeros;
		iov[cnt].iov_len = len;
		cnt++;
		pos += len;
	}
	fuse_reply_iov(req, iov, cnt);
	pthread_rwlock_unlock(&n->lock);
}

static void fm_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	uint64_t pos = (uint64_t)off, end = pos + size;
	size_t done = 0;

	if (end > MAX_FILESIZE) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	pthread_rwlock_wrlock(&n->lock);
	if (end > 0) {
		size_t need = (size_t)((end - 1) >> CHUNK_SHIFT) + 1;

		if (need > n->nchunks) {
			size_t cap = n->nchunks ? n->nchunks : 16;
			char **c;

			while (cap < need)
				cap *= 2;
			c = realloc(n->chunks, cap * sizeof(*c));
			if (!c)
				goto out_nomem;
			memset(c + n->nchunks, 0, (cap - n->nchunks) * sizeof(*c));
			n->chunks = c;
			n->nchunks = cap;
		}
	}
	while (done < size) {
		size_t ci = (size_t)((pos + done) >> CHUNK_SHIFT);
		size_t co = (size_t)((pos + done) & (CHUNK_SIZE - 1));
		size_t len = CHUNK_SIZE - co;

		if (len > size - done)
			len = size - done;
		if (!n->chunks[ci] && !(n->chunks[ci] = chunk_alloc()))
			break;
		memcpy(n->chunks[ci] + co, buf + done, len);
		done += len;
	}
	if (done == 0 && size > 0)
		goto out_nomem;
	if (pos + done > n->size)
		n->size = pos + done;
	now(&n->mtime);
	n->ctime = n->mtime;
	pthread_rwlock_unlock(&n->lock);
	fuse_reply_write(req, done);
	return;

out_nomem:
	pthread_rwlock_unlock(&n->lock);
	fuse_reply_err(req, ENOSPC);
}

static void fm_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct stat st = { 0 };
	size_t used = 0, len;
	char *buf;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	st.st_mode = S_IFDIR;
	st.st_ino = 1;
	if (off < 1) {
		len = fuse_add_direntry(req, buf + used, size - used, ".", &st, 1);
		if (len > size - used)
			goto out;
		used += len;
		off = 1;
	}
	if (off < 2) {
		len = fuse_add_direntry(req, buf + used, size - used, "..", &st, 2);
		if (len > size - used)
			goto out;
		used += len;
		off = 2;
	}
	pthread_mutex_lock(&ns_lock);
	for (size_t i = (size_t)off - 2; i < ndirents; i++) {
		struct node *n = dirents[i];

		if (!n)
			continue;
		st.st_mode = n->mode;
		st.st_ino = n->st_ino;
		len = fuse_add_direntry(req, buf + used, size - used, n->name, &st,
					(off_t)(i + 3));
		if (len > size - used)
			break;
		used += len;
	}
	pthread_mutex_unlock(&ns_lock);
out:
	fuse_reply_buf(req, buf, used);
	free(buf);
}

/*
 * No extended attributes, but the operation exists, as in hmmfs: the kernel
 * then asks for security.capability before every write() (FUSE never marks
 * an inode as free of privileges), where an ENOSYS would stop it for good.
 */
static void fm_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	fuse_reply_err(req, ENODATA);
}

static void fm_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = sv.f_bfree = sv.f_bavail = (fsblkcnt_t)1 << 30;
	sv.f_files = sv.f_ffree = sv.f_favail = (fsfilcnt_t)1 << 30;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops fm_ops = {
	.init = fm_init,
	.lookup = fm_lookup,
	.forget = fm_forget,
	.forget_multi = fm_forget_multi,
	.getattr = fm_getattr,
	.setattr = fm_setattr,
	.create = fm_create,
	.unlink = fm_unlink,
	.open = fm_open,
	.opendir = NULL,  /* the default opendir reply is fine for one directory */
	.release = fm_release,
	.read = fm_read,
	.write = fm_write,
	.readdir = fm_readdir,
	.getxattr = fm_getxattr,
	.statfs = fm_statfs,
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_loop_config *cfg;
	struct fuse_session *se;
	int ret = 1;

	if (fuse_parse_cmdline(&args, &opts) != 0)
		return 1;
	if (opts.show_help) {
		printf("usage: %s [options] MOUNTPOINT\n\n", argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out_args;
	}
	if (opts.show_version) {
		fuse_lowlevel_version();
		ret = 0;
		goto out_args;
	}
	if (!opts.mountpoint) {
		fprintf(stderr, "fuse_min: no mount point (see %s --help)\n", argv[0]);
		goto out_args;
	}

	root.st_ino = 1;
	root.mode = S_IFDIR | 0755;
	root.uid = getuid();
	root.gid = getgid();
	now(&root.mtime);
	root.atime = root.ctime = root.mtime;
	pthread_rwlock_init(&root.lock, NULL);

	/* max_read has to reach the kernel as a mount option too.  hmmfs always
	 * mounts with default_permissions, which makes the kernel fetch a
	 * directory's attributes again after each change to it. */
	if (fuse_opt_add_arg(&args, "-omax_read=1048576,default_permissions") != 0)
		goto out_args;
	se = fuse_session_new(&args, &fm_ops, sizeof(fm_ops), NULL);
	if (!se)
		goto out_args;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_signals;
	fuse_daemonize(opts.foreground);

	if (opts.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		cfg = fuse_loop_cfg_create();
		if (!cfg) {
			ret = 1;
			goto out_unmount;
		}
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	ret = ret != 0;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_args:
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
