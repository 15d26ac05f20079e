/* SPDX-License-Identifier: MIT */
/*
 * attach.c - the devices of an hmmfs mount, attached to this process
 * (hmm_device_attach): a session with the daemon (client.c), and the
 * device memory of the mount's files that this process maps.
 *
 * A device of the mount holds some pages of some files.  For this process,
 * a page of a file it maps shared that lies on the attached device is
 * device-private memory of that device: a mirror of the device sees it as
 * present (range.c asks hmm__attached_lookup), at the page's place in the
 * file's device memory, which the daemon granted and this process maps
 * (read-only unless the file could be opened for writing); any other
 * device, and the CPU, must fault it back first, as with the kernel's
 * device-private pages.  The page's place comes from HMM_IOC_DEVICE_PAGES.
 *
 * The files.  The first time a mirror meets a mapping of a file of the
 * mount, the file is opened again by the mapping's path with the mapping's
 * access (the kernel checks that this process may), checked to be the same
 * file, and its device memory granted.  That memory is mapped into a window
 * reserved once per file, as large as the memory can ever grow (the
 * device's capacity plus the pool's spare budget and a chunk), so a page's
 * address never changes while the process is attached.
 *
 * Invalidation.  When the daemon takes pages of a granted file away, the
 * session's invalidator calls attached_inval: every range of this process's
 * address space known to map those pages of the file (recorded at lookup)
 * is invalidated with HMM_NOTIFY_MIGRATE and no owner (the daemon's change,
 * not one a driver of this process made and could skip), and the daemon
 * goes on once that returns.  The mirror's page-table entries
 * are gone by then, and a compute unit's access in flight has ended.
 *
 * Observers.  A process whose mirrors use a file of a mount through the
 * CPU's mapping (an embedded device, or another device of the mount) must
 * hear of the daemon's changes too, as the kernel's mirrors hear of
 * unmap_mapping_range: a migration takes the page cache away, another
 * process truncates the file.  So the first range fault over a mapping of
 * a file of an hmmfs mount opens an observing session with the mount
 * (HMM_ATTACH_OBSERVE: no device, a grant of each file met, nothing
 * mapped); its invalidations reach every mirror the same way.  Anyone who
 * can open a file of the mount may observe it, whatever its attach= option
 * says (observing maps no memory).
 *
 * Anonymous memory.  Pages of this process's private anonymous memory that
 * migrate to the attached device (hmm_migrate_vma_*) stay in this process:
 * they are nobody else's, and they go with the process.  They live in a
 * pool of the device's own here (dev->core, with the mount's DMA engine
 * settings), but the capacity is the mount's: the pool may hold only what
 * the session reserved from the daemon, which counts it as used on the
 * device.  Room is reserved in steps of RESERVE_STEP when an allocation
 * finds the pool full (the whole step, else exactly what is needed), and
 * given back when more than two steps are free (keeping one), or all of it
 * when the pool empties.  A full device refuses (-ENOSPC); files' pages are
 * not evicted for anonymous memory.
 *
 * Lock order: attached->lock is a leaf taken by lookups and by the
 * invalidation callback (which drops it before invalidating);
 * observers.lock is taken before an observer's lock, never after.
 */
#define _GNU_SOURCE
#include "config.h"
#include "mirror.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* Anonymous memory is reserved from the daemon in steps of this. */
#define RESERVE_STEP ((uint64_t)2 << 20)

/* Address ranges recorded per file for its invalidations. */
#define MAX_VMAS 32
/* The pool's spare budget and chunk size (pool.c), for the window. */
#define WINDOW_SLACK ((uint64_t)36 << 20)

struct mapped {
	uint64_t start, end;   /* addresses that map the file ... */
	uint64_t pgoff;        /* ... from this byte of it */
};

/* A grant: one file's memory on the device, mapped in a window. */
struct afile;

struct grant {
	struct grant *next;    /* in attached->grants */
	struct afile *file;
	uint64_t id;
	int fd, memfd;
	bool writable;
	char *window;
	size_t window_len;
	size_t mapped;          /* bytes of the window mapped; written under the
				 * attachment's lock, read without it (atomic) */
};

struct afile {
	struct afile *next;
	uint64_t ino;
	struct grant *grant;   /* the current one; older ones stay mapped */
	struct mapped vmas[MAX_VMAS];
	unsigned nvmas;
	bool all_vmas;         /* more than MAX_VMAS: invalidate every mapping */
};

struct hmm__attached {
	struct hmm__client *client;
	pid_t pid;             /* the process whose session it is (see foreign()) */
	bool observer;         /* observes the mount; no device of ours */
	int ctl_fd;            /* the path attached through, for device info */
	struct hmm_device *dev;
	dev_t mount_dev;
	uint64_t capacity;
	size_t page_size;
	pthread_mutex_t lock;
	struct afile *files;   /* protected by lock */
	struct grant *grants;  /* every grant, current or not; protected by lock */
	struct hmm__attached *next; /* in attached_list */
};

static struct {
	pthread_mutex_t lock;
	struct hmm__attached *list;
	bool any;              /* atomic: list is not empty */
} attached_list = { .lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * In a child of fork(), a device attached by the parent is the parent's:
 * its session's socket is shared, and its threads are not here.  The child
 * must neither talk on it (answers would reach the parent, reservations be
 * charged to it) nor end it.  The device's calls give -ENODEV in the child
 * (hmm__inherited); a range fault that names it as owner sees no device
 * pages of files (they fault back), and destroying it only forgets the
 * session.
 */
static bool foreign(const struct hmm__attached *a)
{
	return hmm__self_pid() != a->pid;
}

static struct hmm__attached *find_owner(const void *owner)
{
	struct hmm__attached *a;

	if (!owner || !__atomic_load_n(&attached_list.any, __ATOMIC_ACQUIRE))
		return NULL;
	pthread_mutex_lock(&attached_list.lock);
	for (a = attached_list.list; a && a->dev != owner; a = a->next)
		;
	pthread_mutex_unlock(&attached_list.lock);
	return a;
}

/* Remember that [start, end) maps the file from pgoff.  Context: a->lock. */
static void record_vma(struct afile *f, uint64_t start, uint64_t end, uint64_t pgoff)
{
	for (unsigned i = 0; i < f->nvmas; i++)
		if (f->vmas[i].start == start && f->vmas[i].end == end &&
		    f->vmas[i].pgoff == pgoff)
			return;
	if (f->nvmas == MAX_VMAS) {
		f->all_vmas = true;
		return;
	}
	f->vmas[f->nvmas++] = (struct mapped){ start, end, pgoff };
}

/* The pages [first, last] of the file are going: invalidate where they
 * are mapped.  Runs on the session's invalidator (client.c). */
static void attached_inval(void *arg, uint64_t grant, uint64_t first, uint64_t last)
{
	struct hmm__attached *a = arg;
	struct mapped vmas[MAX_VMAS];
	uint64_t ps = a->page_size, lo, hi;
	unsigned n = 0;
	bool all = false;

	pthread_mutex_lock(&a->lock);
	for (struct grant *g = a->grants; g; g = g->next) {
		if (g->id != grant)
			continue;
		n = g->file->nvmas;
		memcpy(vmas, g->file->vmas, n * sizeof(vmas[0]));
		all = g->file->all_vmas;
		break;
	}
	pthread_mutex_unlock(&a->lock);
	if (all) {
		struct hmm_notifier_range r = { 0, HMM__VA_LIMIT, HMM_NOTIFY_MIGRATE, NULL };

		hmm__invalidate_start(&r);
		hmm__invalidate_end(&r);
		return;
	}
	lo = first * ps;
	hi = last >= UINT64_MAX / ps - 1 ? UINT64_MAX : (last + 1) * ps;
	for (unsigned i = 0; i < n; i++) {
		uint64_t len = vmas[i].end - vmas[i].start, from, to;
		struct hmm_notifier_range r;

		if (hi <= vmas[i].pgoff || lo >= vmas[i].pgoff + len)
			continue;
		from = lo > vmas[i].pgoff ? lo - vmas[i].pgoff : 0;
		to = hi - vmas[i].pgoff < len ? hi - vmas[i].pgoff : len;
		r = (struct hmm_notifier_range){ vmas[i].start + from, vmas[i].start + to,
						 HMM_NOTIFY_MIGRATE, NULL };
		hmm__invalidate_start(&r);
		hmm__invalidate_end(&r);
	}
}

/* Map more of the grant's memory, up to its size now.  Context: a->lock. */
static int grow(struct grant *g)
{
	struct stat st;
	size_t size;
	void *m;

	if (fstat(g->memfd, &st) < 0)
		return -errno;
	size = (size_t)st.st_size;
	if (size > g->window_len)
		size = g->window_len;
	if (size <= g->mapped)
		return 0;
	m = hmm__sys_mmap(g->window + g->mapped, size - g->mapped,
			  PROT_READ | (g->writable ? PROT_WRITE : 0), MAP_SHARED | MAP_FIXED,
			  g->memfd, (off_t)g->mapped);
	if (m == MAP_FAILED)
		return -errno;
	/* Read without the lock by lookups: published once mapped. */
	__atomic_store_n(&g->mapped, size, __ATOMIC_RELEASE);
	return 0;
}

static void grant_free(struct grant *g)
{
	if (g->window)
		hmm__sys_munmap(g->window, g->window_len);
	if (g->memfd >= 0)
		close(g->memfd);
	if (g->fd >= 0)
		close(g->fd);
	hmm__free(g);
}

/*
 * A grant of the file that the mapping (path, dev, ino) shows, opened for
 * writing if write.  Return: the grant, or NULL if the file cannot be had
 * (gone, renamed, not allowed): its pages then fault back as for any other
 * device.  Context: a->lock.
 */
static struct grant *grant_new(struct hmm__attached *a, struct afile *f, const char *path,
			       dev_t dev, bool write)
{
	struct grant *g = hmm__calloc(1, sizeof(*g));
	struct stat st;

	if (!g)
		return NULL;
	g->fd = g->memfd = -1;
	if (!path || path[0] != '/')
		goto fail;
	g->fd = open(path, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY);
	if (g->fd < 0 || fstat(g->fd, &st) < 0 || st.st_dev != dev || st.st_ino != f->ino)
		goto fail;
	if (hmm__client_grant(a->client, g->fd, &g->memfd, &g->writable, &g->id))
		goto fail;
	g->window_len = (size_t)((a->capacity + WINDOW_SLACK + ((2u << 20) - 1)) &
				 ~(uint64_t)((2u << 20) - 1));
	g->window = hmm__sys_mmap(NULL, g->window_len, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g->window == MAP_FAILED) {
		g->window = NULL;
		goto fail;
	}
	if (grow(g))
		goto fail;
	g->file = f;
	g->next = a->grants;
	a->grants = g;
	return g;
fail:
	grant_free(g);
	return NULL;
}

/* The file ino's record, made if new.  Context: a->lock. */
static struct afile *file_get(struct hmm__attached *a, uint64_t ino)
{
	struct afile *f;

	for (f = a->files; f; f = f->next)
		if (f->ino == ino)
			return f;
	f = hmm__calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->ino = ino;
	f->next = a->files;
	a->files = f;
	return f;
}

int hmm__attached_lookup(const void *owner, const struct hmm__attached_vma *v, uint64_t addr,
			 size_t n, uint64_t *out)
{
	struct hmm__attached *a = find_owner(owner);
	uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE), mps, off, first, last;
	struct hmm_device_pages *dp;
	struct grant *g;
	struct afile *f;
	int fd, err = 0;

	memset(out, 0, n * sizeof(*out));
	if (!a || !n || makedev(v->dev_major, v->dev_minor) != a->mount_dev || foreign(a))
		return 0;
	mps = a->page_size;
	pthread_mutex_lock(&a->lock);
	f = file_get(a, v->ino);
	g = f ? f->grant : NULL;
	if (f && (!g || (v->write && !g->writable))) {
		struct grant *fresh = grant_new(a, f, v->name, a->mount_dev, v->write);

		if (fresh)
			g = f->grant = fresh;
	}
	if (g)
		record_vma(f, v->start, v->end, v->pgoff);
	fd = g ? g->fd : -1;
	pthread_mutex_unlock(&a->lock);
	if (!g)
		return 0;

	dp = hmm__malloc(sizeof(*dp));
	if (!dp)
		return -ENOMEM;
	off = v->pgoff + (addr - v->start);
	first = off / mps;
	last = (off + n * sys - 1) / mps;
	for (uint64_t at = first; at <= last && !err; at += HMM_DEVICE_PAGES_MAX) {
		uint64_t cnt = last - at + 1 < HMM_DEVICE_PAGES_MAX ? last - at + 1
								   : HMM_DEVICE_PAGES_MAX;

		memset(dp, 0, offsetof(struct hmm_device_pages, where));
		dp->offset = at * mps;
		dp->index = a->dev->attached_index;
		dp->count = (uint32_t)cnt;
		if (ioctl(fd, HMM_IOC_DEVICE_PAGES, dp) < 0) {
			err = -errno;
			break;
		}
		for (size_t k = 0; k < n; k++) {
			uint64_t o = off + k * sys, mp = o / mps;
			uint64_t where;

			if (mp < at || mp >= at + dp->count)
				continue;
			where = dp->where[mp - at];
			if (where == HMM_DEVICE_PAGE_ABSENT)
				continue;
			where += o % mps;
			if (where + sys > __atomic_load_n(&g->mapped, __ATOMIC_ACQUIRE)) {
				pthread_mutex_lock(&a->lock);
				grow(g);
				pthread_mutex_unlock(&a->lock);
				if (where + sys > __atomic_load_n(&g->mapped, __ATOMIC_ACQUIRE))
					continue; /* beyond what can be mapped: fault it back */
			}
			out[k] = HMM_PFN_VALID | ((uint64_t)(uintptr_t)(g->window + where) >> 12);
			if (v->write && g->writable)
				out[k] |= HMM_PFN_WRITE;
		}
	}
	hmm__free(dp);
	return err;
}

bool hmm__attached_any(void)
{
	return __atomic_load_n(&attached_list.any, __ATOMIC_ACQUIRE);
}

HMM_EXPORT int hmm_device_attach(const char *path, unsigned int index, struct hmm_device **out)
{
	struct hmm_device_info info = { .index = index };
	struct hmm__device_config core = { 0 };
	struct hmm__attached *a;
	struct hmm_device *dev;
	struct stat st;
	int fd, err;

	if (!path || !out || index == HMM_ATTACH_OBSERVE)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	err = fstat(fd, &st) < 0 ? -errno : 0;
	if (!err && ioctl(fd, HMM_IOC_DEVICE_INFO, &info) < 0)
		err = -errno;
	if (!err && info.page_size < (uint64_t)sysconf(_SC_PAGESIZE))
		err = -EPROTO;
	a = err ? NULL : hmm__calloc(1, sizeof(*a));
	dev = err ? NULL : hmm__calloc(1, sizeof(*dev));
	if (!err && (!a || !dev))
		err = -ENOMEM;
	if (err) {
		close(fd);
		hmm__free(a);
		hmm__free(dev);
		return err;
	}
	a->ctl_fd = fd;
	a->pid = hmm__self_pid();
	a->dev = dev;
	a->mount_dev = st.st_dev;
	a->capacity = info.capacity;
	a->page_size = info.page_size;
	pthread_mutex_init(&a->lock, NULL);
	err = hmm__client_attach(path, index, attached_inval, a, &a->client);
	if (err)
		goto fail;
	core.type = info.type == HMM_DEVICE_COHERENT ? HMM__DEVICE_COHERENT : HMM__DEVICE_PRIVATE;
	core.capacity = 0; /* what the daemon reserves (hmm__attached_reserve) */
	core.page_size = (size_t)hmm__sys_page_size();
	core.numa_node = hmm__numa_node_exists(info.numa_node) ? info.numa_node : -1;
	core.dma_engines = info.dma_engines ? info.dma_engines : 1;
	core.dma_bw = info.dma_bw;
	core.dma_latency_ns = info.dma_latency_ns;
	err = hmm__device_create(0, &core, &dev->core);
	if (err) {
		hmm__client_detach(a->client);
		goto fail;
	}
	dev->attached = a;
	dev->attached_index = index;
	dev->attached_type = info.type;
	dev->compute_units = hmm__default_compute_units();
	dev->pid = a->pid;
	pthread_mutex_init(&dev->lock, NULL);
	pthread_mutex_lock(&attached_list.lock);
	a->next = attached_list.list;
	attached_list.list = a;
	__atomic_store_n(&attached_list.any, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&attached_list.lock);
	*out = dev;
	return 0;

fail:
	close(fd);
	pthread_mutex_destroy(&a->lock);
	hmm__free(a);
	hmm__free(dev);
	return err;
}

/* Free the grants (unmapping their memory) and the files' records. */
static void records_free(struct hmm__attached *a)
{
	while (a->grants) {
		struct grant *g = a->grants;

		a->grants = g->next;
		grant_free(g);
	}
	while (a->files) {
		struct afile *f = a->files;

		a->files = f->next;
		hmm__free(f);
	}
}

void hmm__attached_detach(struct hmm__attached *a)
{
	pthread_mutex_lock(&attached_list.lock);
	for (struct hmm__attached **pa = &attached_list.list; *pa; pa = &(*pa)->next) {
		if (*pa == a) {
			*pa = a->next;
			break;
		}
	}
	__atomic_store_n(&attached_list.any, attached_list.list != NULL, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&attached_list.lock);
	/* No invalidation can come any more; then the memory goes. */
	if (foreign(a))
		hmm__client_forget(a->client);
	else
		hmm__client_detach(a->client);
	records_free(a);
	close(a->ctl_fd);
	pthread_mutex_destroy(&a->lock);
	hmm__free(a);
}

int hmm__attached_reserve(struct hmm__attached *a, struct hmm__pool *pool, uint64_t n)
{
	uint64_t ps = pool->page_size, step = RESERVE_STEP / ps, got = n;
	int err = -ENOSPC;

	if (n < step) {
		err = hmm__client_reserve(a->client, step * ps);
		if (!err)
			got = step;
	}
	if (err == -ENOSPC) /* the whole step does not fit: what is needed */
		err = hmm__client_reserve(a->client, n * ps);
	if (!err)
		hmm__pool_add_capacity(pool, got);
	return err;
}

void hmm__attached_trim(struct hmm__attached *a, struct hmm__pool *pool)
{
	uint64_t ps = pool->page_size, step = RESERVE_STEP / ps;
	uint64_t used = hmm__pool_used(pool), drop;

	if (used && hmm__pool_capacity(pool) - used <= 2 * step)
		return;
	drop = hmm__pool_trim_capacity(pool, used ? step : 0);
	/* Not sent: the daemon still counts it, so the pool keeps it. */
	if (drop && hmm__client_unreserve(a->client, drop * ps) &&
	    hmm__client_alive(a->client))
		hmm__pool_add_capacity(pool, drop);
}

int hmm__attached_stats(struct hmm__attached *a, unsigned index, struct hmm_device_stats *st)
{
	struct hmm_device_info info = { .index = index };

	if (ioctl(a->ctl_fd, HMM_IOC_DEVICE_INFO, &info) < 0)
		return -errno;
	memset(st, 0, sizeof(*st));
	st->capacity = info.capacity;
	st->used = info.used;
	st->pages_in = info.pages_in;
	st->pages_out = info.pages_out;
	st->cpu_faults = info.cpu_faults;
	return 0;
}

/* ---- observers ----------------------------------------------------------- */

#define FUSE_SUPER_MAGIC 0x65735546
/* Filesystems (by device) known not to be observable; reused round-robin. */
#define MAX_UNOBSERVED 64

static struct {
	pthread_mutex_t lock;
	pid_t pid;                       /* whose: a child of fork() starts afresh */
	struct hmm__attached *list;      /* by mount_dev */
	dev_t unobserved[MAX_UNOBSERVED];
	unsigned nunobserved, next;
} observers = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The parent's observers are the parent's: their threads are not
 * in this process, and their sockets are shared with it (so never shut
 * down here).  Context: observers.lock. */
static void forget_parents(void)
{
	while (observers.list) {
		struct hmm__attached *a = observers.list;

		observers.list = a->next;
		hmm__client_forget(a->client);
		records_free(a);
		hmm__free(a);
	}
	observers.nunobserved = 0;
	observers.pid = hmm__self_pid();
}

/* An observer whose mount went away (its session ended): a new mount may
 * reuse the device number.  Context: observers.lock. */
static void observer_free(struct hmm__attached *a)
{
	for (struct hmm__attached **pa = &observers.list; *pa; pa = &(*pa)->next) {
		if (*pa == a) {
			*pa = a->next;
			break;
		}
	}
	hmm__client_detach(a->client);
	records_free(a);
	pthread_mutex_destroy(&a->lock);
	hmm__free(a);
}

static void unobservable(dev_t dev)
{
	if (observers.nunobserved < MAX_UNOBSERVED) {
		observers.unobserved[observers.nunobserved++] = dev;
	} else {
		observers.unobserved[observers.next] = dev;
		observers.next = (observers.next + 1) % MAX_UNOBSERVED;
	}
}

/* An observer of the mount that path is on, or NULL if it cannot be had
 * (not hmmfs, or a daemon without sessions).  Context: observers.lock. */
static struct hmm__attached *observer_new(const char *path, dev_t dev)
{
	struct hmm__attached *a;
	struct statfs sfs;

	/* hmmfs reports its page size as the block size. */
	if (statfs(path, &sfs) < 0 || (unsigned long)sfs.f_type != FUSE_SUPER_MAGIC ||
	    sfs.f_bsize <= 0)
		return NULL;
	a = hmm__calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	/* An observer must not keep the mount busy: nothing stays open. */
	a->observer = true;
	a->pid = hmm__self_pid();
	a->ctl_fd = -1;
	a->mount_dev = dev;
	a->page_size = (size_t)sfs.f_bsize;
	pthread_mutex_init(&a->lock, NULL);
	if (hmm__client_attach(path, HMM_ATTACH_OBSERVE, attached_inval, a, &a->client)) {
		pthread_mutex_destroy(&a->lock);
		hmm__free(a);
		return NULL;
	}
	return a;
}

/* A grant of the file, held to hear of its changes; nothing is mapped.
 * Context: a->lock. */
static struct grant *observe_file(struct hmm__attached *a, struct afile *f, const char *path)
{
	struct grant *g = hmm__calloc(1, sizeof(*g));
	struct stat st;
	int fd;

	if (!g)
		return NULL;
	g->fd = g->memfd = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_dev != a->mount_dev || st.st_ino != f->ino ||
	    hmm__client_grant(a->client, fd, NULL, NULL, &g->id)) {
		if (fd >= 0)
			close(fd);
		hmm__free(g);
		return NULL;
	}
	close(fd);
	g->file = f;
	g->next = a->grants;
	a->grants = g;
	return g;
}

void hmm__observe(const struct hmm__attached_vma *v)
{
	dev_t dev = makedev(v->dev_major, v->dev_minor);
	struct hmm__attached *a;
	struct afile *f;

	if (!v->name || v->name[0] != '/' || !v->ino)
		return;
	pthread_mutex_lock(&observers.lock);
	if (observers.pid != hmm__self_pid())
		forget_parents();
	for (unsigned i = 0; i < observers.nunobserved; i++) {
		if (observers.unobserved[i] == dev) {
			pthread_mutex_unlock(&observers.lock);
			return;
		}
	}
	for (a = observers.list; a && a->mount_dev != dev; a = a->next)
		;
	if (a && !hmm__client_alive(a->client)) {
		observer_free(a);
		a = NULL;
	}
	if (!a) {
		a = observer_new(v->name, dev);
		if (!a) {
			unobservable(dev);
			pthread_mutex_unlock(&observers.lock);
			return;
		}
		a->next = observers.list;
		observers.list = a;
	}
	pthread_mutex_lock(&a->lock);
	f = file_get(a, v->ino);
	if (f && (f->grant || (f->grant = observe_file(a, f, v->name))))
		record_vma(f, v->start, v->end, v->pgoff);
	pthread_mutex_unlock(&a->lock);
	pthread_mutex_unlock(&observers.lock);
}
