/* SPDX-License-Identifier: MIT */
/*
 * The FUSE side of migration: the hmmfs ioctls and the migration thread.
 *
 * Moving a range of a file to a location takes three phases, chunk by chunk:
 *
 *   1. mark    Under the file's data_lock, every page of the chunk that is
 *              not a hole and not already at the destination becomes MOVING.
 *   2. take    With no lock held, the kernel is told to drop the chunk from
 *              its page cache (fuse_lowlevel_notify_inval_inode): every
 *              mapping of it will fault, and dirty pages are written back
 *              first, as WRITE requests that other workers serve into the
 *              pages' current memory.
 *   3. copy    Under the file's data_lock, the pages still MOVING are copied
 *              by the DMA engines and become resident at the destination.
 *
 * A CPU access between 1 and 3 (a READ, or a WRITE from write(2); not the
 * write-back that phase 2 itself causes) makes its page STABLE again where
 * it is, so it is not moved: the access wins, as it does in the kernel's
 * migrate_vma when a page is busy.  An access during phase 3 waits for the
 * data_lock and then finds the page at its destination.
 *
 * Phase 2 must not overlap a write(2) in flight.  The kernel's write-through
 * path copies the data into an up-to-date page-cache page and unlocks it
 * before the WRITE reaches hmmfs; dropping the page in that window would let
 * a concurrent READ cache the old bytes, which a later store through a
 * mapping could even write back over the new ones.  The kernel holds the
 * file's i_rwsem across the whole write(2), and across fsync(2) until FSYNC
 * is answered.  So the migration thread opens the file itself (by handle,
 * open_by_handle_at: the file may have no name), registers the invalidation
 * in take_req and calls fsync(2): whichever FSYNC on that file a worker
 * serves next has the invalidator (invalidate.c) perform it and then
 * answers, so the kernel holds i_rwsem throughout.  Where the daemon
 * cannot open files by handle (it lacks CAP_DAC_READ_SEARCH), the migration
 * thread invalidates without that protection; hmmfs(8), BUGS.
 *
 * Phase 2 must not run in a FUSE worker that holds anything a READ or WRITE
 * needs, and the kernel must have free workers to send those WRITEs to; so
 * ioctl handlers only queue the request and return, and the migration
 * thread, which is not a worker, replies when the move is done.
 *
 * A migration to a coherent device also takes from the CPU the pages
 * already there that the CPU has a copy of (cpu_copy, pages.c
 * "Coherence"), without moving them: afterwards the device's memory is the
 * only copy, which the device that holds them uses in place.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <hmm.h>

/* Pages handled per round of the three phases (16 MiB of 4 KiB pages):
 * large enough that invalidation and locking cost little against the copy. */
#define MIGRATE_CHUNK_PAGES 4096
/* Pages evicted per round of eviction. */
#define EVICT_BATCH 512

struct migration {
	struct migration *next;
	fuse_req_t req;
	fuse_ino_t ino;
	struct hmmfs_inode *inode; /* pinned until the reply */
	struct hmm_migrate args;
	int own_fd;                /* open_own_fd's, or -errno */
	uint64_t indices[MIGRATE_CHUNK_PAGES];      /* the chunk's MOVING pages */
	uint64_t found[MIGRATE_CHUNK_PAGES];        /* scratch: indices of batch[] */
	unsigned char cached[MIGRATE_CHUNK_PAGES];  /* still_cached's answer */
	struct hmm__page *batch[MIGRATE_CHUNK_PAGES];
};

/* An invalidation waiting for an FSYNC to run it (phase 2). */
enum take_state {
	TAKE_NONE,     /* nothing to do */
	TAKE_PENDING,  /* registered; the next FSYNC on ino runs it */
	TAKE_RUNNING,  /* the invalidator is invalidating */
	TAKE_DONE,     /* done, while the kernel held i_rwsem */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct migration *head, **tail; /* protected by lock */
	bool stop;                      /* protected by lock */
	bool running;
	pthread_t thread;
	/* Phase 2 of the chunk in progress; protected by lock. */
	struct {
		enum take_state state;
		fuse_ino_t ino;
		off_t off, len;
	} take_req;
	pthread_cond_t taken;           /* take_req.state left TAKE_RUNNING */
	pid_t tid;                      /* atomic: the migration thread's */
	bool warned;                    /* about unserialized invalidation */
} mig = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.taken = PTHREAD_COND_INITIALIZER,
	.tail = &mig.head,
};

/* The kernel's file handle for a FUSE inode: FILEID_INO64_GEN, the node id
 * in two 32-bit words and the generation (fs/fuse/inode.c, fuse_encode_fh). */
#define FUSE_FILEID_INO64_GEN 0x81

/*
 * A file descriptor of the migration thread's own on m's file, for fsync(2)
 * to hold the file's i_rwsem.  Opened by handle through the mount point,
 * and checked to be the right file (another mount may hide this one).
 * Return: the descriptor, or a negative errno.
 */
static int open_own_fd(const struct migration *m)
{
	union {
		struct file_handle h;
		char space[sizeof(struct file_handle) + 3 * sizeof(uint32_t)];
	} fh;
	uint32_t raw[3] = { (uint32_t)((uint64_t)m->ino >> 32), (uint32_t)m->ino,
			    (uint32_t)m->inode->generation };
	struct stat st;
	int dir, fd;

	if (!hmmfs.mountpoint)
		return -ENOENT;
	dir = open(hmmfs.mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return -errno;
	fh.h.handle_bytes = sizeof(raw);
	fh.h.handle_type = FUSE_FILEID_INO64_GEN;
	memcpy(fh.h.f_handle, raw, sizeof(raw));
	fd = open_by_handle_at(dir, &fh.h, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fd = -errno;
	close(dir);
	if (fd >= 0 && (fstat(fd, &st) != 0 || st.st_ino != m->inode->ino)) {
		close(fd);
		fd = -ESTALE;
	}
	return fd;
}

/* The invalidation of take_req, and the FSYNC that answers after it. */
static struct {
	struct hmmfs_inval_job job;
	fuse_req_t req;
} take_job;

static void taken(struct hmmfs_inval_job *job)
{
	(void)job;
	pthread_mutex_lock(&mig.lock);
	mig.take_req.state = TAKE_DONE;
	pthread_cond_broadcast(&mig.taken);
	pthread_mutex_unlock(&mig.lock);
	fuse_reply_err(take_job.req, 0);
}

/*
 * hmmfs_migrate_fsync() - if an invalidation is registered for ino, have
 * the invalidator run it and then answer req, while the kernel holds the
 * file's i_rwsem: no write(2) is half done (see the top).
 * Context: a FUSE worker serving FSYNC on ino, no lock held.
 * Return: true if req will be answered that way; false if the caller
 * answers it.
 */
bool hmmfs_migrate_fsync(fuse_req_t req, fuse_ino_t ino)
{
	pthread_mutex_lock(&mig.lock);
	if (mig.take_req.state != TAKE_PENDING || mig.take_req.ino != ino) {
		pthread_mutex_unlock(&mig.lock);
		return false;
	}
	mig.take_req.state = TAKE_RUNNING;
	take_job.job.ino = ino;
	take_job.job.off = mig.take_req.off;
	take_job.job.len = mig.take_req.len;
	take_job.job.done = taken;
	take_job.req = req;
	pthread_mutex_unlock(&mig.lock);
	hmmfs_invalidate_async(&take_job.job);
	return true;
}

/*
 * Phase 2: drop [off, off + len) of the file from the page cache, through
 * an FSYNC on own_fd when there is one.  If the FSYNC cannot be had (the
 * file could not be opened; fsync(2) failed before sending it), invalidate
 * directly, unprotected against write(2), and say so once.
 */
static void take_from_cpu(const struct migration *m, int own_fd, off_t off, off_t len)
{
	bool done;

	pthread_mutex_lock(&mig.lock);
	mig.take_req.state = TAKE_PENDING;
	mig.take_req.ino = m->ino;
	mig.take_req.off = off;
	mig.take_req.len = len;
	pthread_mutex_unlock(&mig.lock);

	/* A failed write-back before the FSYNC is reported once: try again. */
	for (int tries = 0; own_fd >= 0 && tries < 2; tries++) {
		int err = fsync(own_fd) ? errno : 0;

		pthread_mutex_lock(&mig.lock);
		done = mig.take_req.state != TAKE_PENDING;
		pthread_mutex_unlock(&mig.lock);
		if (done || err == ENOTCONN)
			break;
	}
	pthread_mutex_lock(&mig.lock);
	/* Another FSYNC on the file may have taken it and still be running. */
	while (mig.take_req.state == TAKE_RUNNING)
		pthread_cond_wait(&mig.taken, &mig.lock);
	done = mig.take_req.state == TAKE_DONE;
	mig.take_req.state = TAKE_NONE;
	pthread_mutex_unlock(&mig.lock);
	if (!done)
		fuse_lowlevel_notify_inval_inode(hmmfs.se, m->ino, off, len);
}

#ifndef __NR_cachestat
#define __NR_cachestat 451 /* Linux 6.5; Debian 12's headers are 6.1 */
#endif

/* cachestat(2)'s arguments and answer (include/uapi/linux/mman.h). */
struct page_cache_range {
	uint64_t off, len;
};
struct page_cache_stat {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* Whether the page cache holds some of [off, off + len) of fd; false if
 * the kernel cannot say (before 6.5). */
static bool cache_holds(int fd, uint64_t off, uint64_t len)
{
	struct page_cache_range r = { off, len };
	struct page_cache_stat st;

	return syscall(__NR_cachestat, fd, &r, &st, 0) == 0 && st.nr_cache;
}

/*
 * Which pages of [first, first + n) the page cache still holds (cached[i]
 * for page first + i), asked with cachestat(2) on own_fd: the whole range
 * first, then each page when some is.  Phase 2 cannot drop a page that
 * something holds at that moment (a device's process_vm_readv(2) going
 * through the CPU's mapping, say): such a page is still the CPU's, as if
 * it had touched it.  Without own_fd none is taken to be.  (Not mincore(2)
 * on a mapping of the file: unmapping it writes the file back, which the
 * WRITEs of the caller's data_lock would wait for.)
 * Context: f->data_lock held for writing, so that no READ fills the cache.
 */
static void still_cached(int own_fd, uint64_t first, size_t n, unsigned char *cached)
{
	memset(cached, 0, n);
	if (own_fd < 0 || !cache_holds(own_fd, first << hmmfs.page_shift,
				       (uint64_t)n << hmmfs.page_shift))
		return;
	for (size_t i = 0; i < n; i++)
		cached[i] = cache_holds(own_fd, (first + i) << hmmfs.page_shift, hmmfs.page_size);
}

/*
 * Phase 3 for one chunk: move the pages at indices[] that are still MOVING
 * and no longer cached (cached[] from indices[0]) to dest, all or none,
 * and make every one STABLE.
 * Context: f->data_lock held for writing.
 */
static int copy_chunk(struct hmmfs_inode *f, const uint64_t *indices, size_t n, int dest,
		      const unsigned char *cached, struct hmm__page **batch, uint64_t *found,
		      uint64_t *moved)
{
	uint64_t at = indices[0];
	size_t k = 0, got, j = 0;
	int err;

	/* The pages now in the range, matched against indices[] (both sorted):
	 * a page may be gone (truncated, punched) or new meanwhile. */
	got = hmm__radix_gang(&f->file.pages, &at, indices[n - 1] + 1, (void **)batch, found,
			      MIGRATE_CHUNK_PAGES);
	for (size_t i = 0; i < got; i++) {
		struct hmm__page *pg = batch[i];

		while (j < n && indices[j] < found[i])
			j++;
		/* Not one of ours, or touched by the CPU meanwhile. */
		if (j == n || indices[j] != found[i] || pg->state != HMM__PAGE_MOVING)
			continue;
		pg->state = HMM__PAGE_STABLE;
		if (cached[found[i] - indices[0]]) {
			pg->cpu_copy = true; /* the CPU's still: it stays */
			__atomic_store_n(&pg->in_place, false, __ATOMIC_RELAXED);
			continue;
		}
		/* Phase 2 took it from the CPU, and no READ copied it since;
		 * the sessions dropped it after phase 2. */
		pg->cpu_copy = false;
		__atomic_store_n(&pg->in_place, false, __ATOMIC_RELAXED);
		/* Brought to the host by a write-back meanwhile. */
		if (pg->loc != dest)
			batch[k++] = pg;
	}
	/* hmm__pages_move copies each source's pages in one batch. */
	err = hmmfs_pages_move(f, batch, k, dest);
	if (!err)
		*moved += k;
	return err;
}

/* Move one chunk [first, first + npages) of f: the three phases. */
static int migrate_chunk(struct migration *m, uint64_t first, uint64_t npages)
{
	struct hmmfs_inode *f = m->inode;
	uint64_t *indices = m->indices, index = first;
	size_t n = 0, got;
	int dest = m->args.dest, err;

	pthread_rwlock_wrlock(&f->data_lock);
	got = hmm__radix_gang(&f->file.pages, &index, first + npages, (void **)m->batch,
			      indices, MIGRATE_CHUNK_PAGES);
	/* Keep in indices[] (in place: n <= i) the pages that will move. */
	for (size_t i = 0; i < got; i++) {
		struct hmm__page *pg = m->batch[i];

		if (pg->loc == dest)
			m->args.skipped++;
		/* A page already on the (coherent) device that the CPU has a
		 * copy of: taken from the CPU, as the others, but not moved. */
		if ((pg->loc != dest || (dest != HMM__LOC_HOST && pg->cpu_copy)) &&
		    pg->state == HMM__PAGE_STABLE) {
			pg->state = HMM__PAGE_MOVING;
			pg->dest = (int16_t)dest;
			indices[n++] = indices[i];
		}
	}
	pthread_rwlock_unlock(&f->data_lock);
	if (!n)
		return 0;

	/* Take the pages from the CPU; the kernel reports no errors here. */
	take_from_cpu(m, m->own_fd, (off_t)(indices[0] << hmmfs.page_shift),
		      (off_t)((indices[n - 1] - indices[0] + 1) << hmmfs.page_shift));

	/*
	 * Then the sessions that map the pages drop them, before any is
	 * copied: device memory the pages leave, and the CPU's addresses of
	 * pages phase 2 took, as the kernel's unmap_mapping_range tells a
	 * process's mirrors.  Not before phase 2: a mirror that faulted a
	 * page in again from the page cache in between would keep the CPU's
	 * address of a page that then went to a device, and its next access
	 * would fault the page back under its driver lock, which the
	 * invalidation that fault-back sends needs.  After phase 2, getting
	 * the page again means a READ, which keeps it where it is; and MOVING
	 * pages are not handed out.
	 */
	hmmfs_session_invalidate(f, -1, indices[0], indices[n - 1], true);

	pthread_rwlock_wrlock(&f->data_lock);
	still_cached(m->own_fd, indices[0], (size_t)(indices[n - 1] - indices[0] + 1), m->cached);
	err = copy_chunk(f, indices, n, dest, m->cached, m->batch, m->found, &m->args.moved);
	pthread_rwlock_unlock(&f->data_lock);
	return err;
}

static void hold_inode(void *owner)
{
	hmmfs_inode_pin(owner);
}

/*
 * Move up to max of dev's least recently used pages, all of one file, to
 * host RAM.  Pages of [first, end) of the file being migrated (m) stay.
 * Context: no lock held; takes the victim file's data_lock.
 * Return: pages evicted (0 when none could be), or a negative errno.
 */
static int evict_batch(struct hmm__device *dev, const struct migration *m,
		       uint64_t first, uint64_t end, size_t max)
{
	struct hmm__page *batch[EVICT_BATCH];
	uint64_t indices[EVICT_BATCH];
	struct hmmfs_inode *f;
	void *owner = NULL;
	size_t n, k = 0;
	int err = 0;

	n = hmm__device_lru_oldest(dev, hold_inode, &owner, indices,
				   max < EVICT_BATCH ? max : EVICT_BATCH);
	if (!n)
		return 0;
	f = owner;
	pthread_rwlock_wrlock(&f->data_lock);
	if (hmmfs_session_shared(f)) {
		uint64_t lo = UINT64_MAX, hi = 0;

		for (size_t i = 0; i < n; i++) {
			lo = indices[i] < lo ? indices[i] : lo;
			hi = indices[i] > hi ? indices[i] : hi;
		}
		hmmfs_pages_unshare(f, lo, hi, false);
	}
	for (size_t i = 0; i < n; i++) {
		struct hmm__page *pg = hmm__radix_lookup(&f->file.pages, indices[i]);

		if (!pg || pg->loc != (int)dev->index || pg->state != HMM__PAGE_STABLE)
			continue;
		if (f == m->inode && indices[i] >= first && indices[i] < end)
			continue;
		batch[k++] = pg;
	}
	if (k)
		err = hmmfs_pages_move(f, batch, k, HMM__LOC_HOST);
	if (k && !err)
		f->file.evictions += k;
	pthread_rwlock_unlock(&f->data_lock);
	hmmfs_inode_unpin(f);
	if (err)
		return err;
	__atomic_add_fetch(&dev->counters.evictions, k, __ATOMIC_RELAXED);
	return (int)k;
}

/*
 * evict=lru: make room for need pages on device dest by moving its least
 * recently used pages to host RAM.
 * Return: 0, -ENOSPC (host RAM is full, or the device holds too little else).
 */
static int make_room(int dest, uint64_t need, const struct migration *m,
		     uint64_t first, uint64_t end)
{
	struct hmm__device *dev = hmmfs.devices[dest];
	unsigned idle = 0;

	if (need > dev->pool.capacity_pages)
		return -ENOSPC;
	for (;;) {
		uint64_t room = dev->pool.capacity_pages - hmm__pool_used(&dev->pool);
		int n;

		if (need <= room)
			break;
		/* Only as many as are missing: the rest stay on the device. */
		n = evict_batch(dev, m, first, end, (size_t)(need - room));

		if (n < 0)
			return n;
		/* A whole pass over the list that frees nothing: give up. */
		idle = n ? 0 : idle + 1;
		if (idle > 2 + dev->pool.capacity_pages / EVICT_BATCH)
			return -ENOSPC;
	}
	return 0;
}

/* Pages of [first, end) that are not holes and not at dest; m's arrays
 * are the scratch space. */
static uint64_t pages_to_move(struct migration *m, uint64_t first, uint64_t end, int dest)
{
	uint64_t index = first, n = 0;
	size_t got;

	while ((got = hmm__radix_gang(&m->inode->file.pages, &index, end, (void **)m->batch,
				      m->found, MIGRATE_CHUNK_PAGES)))
		for (size_t i = 0; i < got; i++)
			n += m->batch[i]->loc != dest;
	return n;
}

static void migrate(struct migration *m)
{
	uint64_t first = m->args.offset >> hmmfs.page_shift, end, size, need = 0;
	struct hmm__pool *to = hmm__mem_pool(&hmmfs.mem, m->args.dest);
	int err = 0;

	m->own_fd = open_own_fd(m);
	if (m->own_fd < 0 && !mig.warned) {
		mig.warned = true;
		fprintf(stderr, "hmmfs: cannot open a file by handle to migrate it (%s); "
			"migrations are not serialized against write(2), and data stored "
			"through a mapping over a hole moves only once written back\n",
			strerror(-m->own_fd));
	}
	/*
	 * Stores through a mapping may sit in dirty page-cache pages over what
	 * is still a hole here, and a hole does not move: write the file back
	 * first, so that what moves is what the program wrote.  With fsync(2),
	 * which holds the file's i_rwsem meanwhile: a write-back racing a
	 * write(2) could carry the page as it was before the write reached it
	 * (sync_file_range, which takes no lock, lost writes in the race test).
	 */
	if (m->own_fd >= 0)
		fsync(m->own_fd);

	pthread_rwlock_rdlock(&m->inode->data_lock);
	size = m->inode->file.size;
	end = (size + hmmfs.page_size - 1) >> hmmfs.page_shift;
	if (m->args.length) {
		uint64_t last = (m->args.offset + m->args.length) >> hmmfs.page_shift;
		if (last < end)
			end = last;
	}
	if (first < end)
		need = pages_to_move(m, first, end, m->args.dest);
	pthread_rwlock_unlock(&m->inode->data_lock);
	/* Refuse what cannot fit before moving anything, so a failed migration
	 * leaves every page where it was.  (Another writer can still fill the
	 * destination meanwhile; then the chunk that does not fit fails.) */
	if (need > to->capacity_pages - hmm__pool_used(to)) {
		if (m->args.dest != HMM__LOC_HOST && hmmfs.evict_lru)
			err = make_room(m->args.dest, need, m, first, end);
		else
			err = -ENOSPC;
	}
	for (uint64_t at = first; at < end && !err; at += MIGRATE_CHUNK_PAGES)
		err = migrate_chunk(m, at, end - at < MIGRATE_CHUNK_PAGES ? end - at
									  : MIGRATE_CHUNK_PAGES);
	/* Closed before the reply, so that the caller never sees the file
	 * open longer than its own migration. */
	if (m->own_fd >= 0)
		close(m->own_fd);
	if (err)
		fuse_reply_err(m->req, -err);
	else
		fuse_reply_ioctl(m->req, 0, &m->args, sizeof(m->args));
	hmmfs_inode_unpin(m->inode);
}

/*
 * hmmfs_migrate_opened_by() - is pid (a FUSE request's thread) the
 * migration thread, which opens files itself?
 */
bool hmmfs_migrate_opened_by(pid_t pid)
{
	return pid == __atomic_load_n(&mig.tid, __ATOMIC_RELAXED);
}

static void *migration_thread(void *arg)
{
	__atomic_store_n(&mig.tid, (pid_t)gettid(), __ATOMIC_RELAXED);
	for (;;) {
		struct migration *m;

		pthread_mutex_lock(&mig.lock);
		while (!mig.head && !mig.stop)
			pthread_cond_wait(&mig.wake, &mig.lock);
		m = mig.head;
		if (m) {
			mig.head = m->next;
			if (!mig.head)
				mig.tail = &mig.head;
		}
		pthread_mutex_unlock(&mig.lock);
		if (!m)
			return NULL; /* stopping, and nothing left */
		migrate(m);
		free(m);
	}
}

int hmmfs_migrate_start(void)
{
	int err = pthread_create(&mig.thread, NULL, migration_thread, NULL);

	if (err)
		return -err;
	mig.running = true;
	return 0;
}

/*
 * At shutdown: queued migrations are answered with ENOTCONN and new ones
 * refused; the one in progress finishes (or fails) on its own.
 */
void hmmfs_migrate_refuse(void)
{
	struct migration *m, *next;

	pthread_mutex_lock(&mig.lock);
	mig.stop = true;
	m = mig.head;
	mig.head = NULL;
	mig.tail = &mig.head;
	pthread_cond_broadcast(&mig.wake);
	pthread_mutex_unlock(&mig.lock);
	for (; m; m = next) {
		next = m->next;
		fuse_reply_err(m->req, ENOTCONN);
		hmmfs_inode_unpin(m->inode);
		free(m);
	}
}

/* Wait for the migration thread to end.  Context: after hmmfs_migrate_refuse. */
void hmmfs_migrate_stop(void)
{
	if (!mig.running)
		return;
	hmmfs_migrate_refuse();
	pthread_join(mig.thread, NULL);
	mig.running = false;
}

static void queue_migration(fuse_req_t req, fuse_ino_t ino, struct hmmfs_inode *inode,
			    const struct hmm_migrate *args)
{
	struct migration *m = calloc(1, sizeof(*m));

	if (!m) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	m->req = req;
	m->ino = ino;
	m->inode = inode;
	m->args = *args;
	m->args.moved = 0;
	m->args.skipped = 0;
	hmmfs_inode_pin(inode);
	pthread_mutex_lock(&mig.lock);
	if (mig.stop) {
		pthread_mutex_unlock(&mig.lock);
		hmmfs_inode_unpin(inode);
		free(m);
		fuse_reply_err(req, ENOTCONN);
		return;
	}
	*mig.tail = m;
	mig.tail = &m->next;
	pthread_cond_signal(&mig.wake);
	pthread_mutex_unlock(&mig.lock);
}

static void ioctl_migrate(fuse_req_t req, fuse_ino_t ino, struct hmmfs_inode *inode,
			  const struct hmm_migrate *a)
{
	uint64_t mask = hmmfs.page_size - 1;

	if (a->flags || (a->offset & mask) || (a->length & mask) ||
	    a->offset >= HMMFS_MAX_FILESIZE || a->length > HMMFS_MAX_FILESIZE - a->offset) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (a->dest != HMM_LOC_HOST && (a->dest < 0 || (unsigned)a->dest >= hmmfs.ndevices)) {
		fuse_reply_err(req, ENODEV);
		return;
	}
	queue_migration(req, ino, inode, a);
}

static void ioctl_residency(fuse_req_t req, struct hmmfs_inode *f, const struct hmm_residency *in)
{
	struct hmm_residency *r;
	uint64_t index, end;

	if (in->offset & (hmmfs.page_size - 1)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r->offset = in->offset;
	r->page_size = (uint32_t)hmmfs.page_size;
	pthread_rwlock_rdlock(&f->data_lock);
	r->size = f->file.size;
	end = (r->size + hmmfs.page_size - 1) >> hmmfs.page_shift;
	index = in->offset >> hmmfs.page_shift;
	for (; index < end; index++) {
		struct hmm__page *pg = hmm__radix_lookup(&f->file.pages, index);
		int32_t loc = pg ? pg->loc : HMM_LOC_HOLE;
		struct hmm_residency_range *last = r->count ? &r->ranges[r->count - 1] : NULL;
		uint64_t off = index << hmmfs.page_shift;

		if (!pg) {
			/* Jump over a run of holes in one step. */
			uint64_t next = index;
			if (!hmm__radix_next(&f->file.pages, &next) || next > end)
				next = end;
			if (last && last->location == HMM_LOC_HOLE) {
				last->length = (next << hmmfs.page_shift) - last->offset;
			} else if (r->count < HMM_RESIDENCY_RANGES) {
				r->ranges[r->count++] = (struct hmm_residency_range){ off,
					(next << hmmfs.page_shift) - off, HMM_LOC_HOLE, 0 };
			} else {
				break;
			}
			index = next - 1;
			continue;
		}
		if (last && last->location == loc)
			last->length += hmmfs.page_size;
		else if (r->count < HMM_RESIDENCY_RANGES)
			r->ranges[r->count++] = (struct hmm_residency_range){ off, hmmfs.page_size, loc, 0 };
		else
			break;
	}
	r->next = index >= end ? r->size : index << hmmfs.page_shift;
	/* The last range ends at the size, not at the end of its page. */
	if (r->count && r->next == r->size) {
		struct hmm_residency_range *last = &r->ranges[r->count - 1];
		last->length = r->size - last->offset;
	}
	pthread_rwlock_unlock(&f->data_lock);
	fuse_reply_ioctl(req, 0, r, sizeof(*r));
	free(r);
}

static void ioctl_device_info(fuse_req_t req, const struct hmm_device_info *in)
{
	struct hmm_device_info info;
	struct hmm__dma_stats dma;
	struct hmm__device *dev;

	if (in->index >= hmmfs.ndevices) {
		fuse_reply_err(req, ENODEV);
		return;
	}
	dev = hmmfs.devices[in->index];
	memset(&info, 0, sizeof(info));
	info.index = in->index;
	info.ndevices = hmmfs.ndevices;
	info.type = dev->type == HMM__DEVICE_COHERENT ? HMM_DEVICE_COHERENT : HMM_DEVICE_PRIVATE;
	info.numa_node = dev->numa_node;
	info.page_size = (uint32_t)hmmfs.page_size;
	info.dma_engines = hmm__dma_engines(dev->dma);
	info.dma_bw = dev->config.dma_bw;
	info.dma_latency_ns = dev->config.dma_latency_ns;
	info.capacity = dev->pool.capacity_pages * hmmfs.page_size;
	info.used = hmm__pool_used(&dev->pool) * hmmfs.page_size;
	info.pages_in = __atomic_load_n(&dev->counters.pages_in, __ATOMIC_RELAXED);
	info.bytes_in = __atomic_load_n(&dev->counters.bytes_in, __ATOMIC_RELAXED);
	info.pages_out = __atomic_load_n(&dev->counters.pages_out, __ATOMIC_RELAXED);
	info.bytes_out = __atomic_load_n(&dev->counters.bytes_out, __ATOMIC_RELAXED);
	info.cpu_faults = __atomic_load_n(&dev->counters.cpu_faults, __ATOMIC_RELAXED);
	info.evictions = __atomic_load_n(&dev->counters.evictions, __ATOMIC_RELAXED);
	hmm__dma_stats(dev->dma, &dma);
	info.dma_busy_ns = dma.busy_ns;
	fuse_reply_ioctl(req, 0, &info, sizeof(info));
}

static void ioctl_file_stat(fuse_req_t req, struct hmmfs_inode *f)
{
	struct hmm_file_stat st;
	uint64_t index = 0, ps = hmmfs.page_size;
	struct hmm__page *pg;

	memset(&st, 0, sizeof(st));
	st.page_size = (uint32_t)ps;
	st.ndevices = hmmfs.ndevices;
	pthread_rwlock_rdlock(&f->data_lock);
	st.size = f->file.size;
	while ((pg = hmm__radix_next(&f->file.pages, &index))) {
		if (pg->loc == HMM__LOC_HOST)
			st.host_bytes += ps;
		else
			st.device_bytes[pg->loc] += ps;
		index++;
	}
	st.pages_to_device = f->file.pages_to_device;
	st.bytes_to_device = f->file.pages_to_device * ps;
	st.pages_to_host = f->file.pages_to_host;
	st.bytes_to_host = f->file.pages_to_host * ps;
	st.cpu_faults = f->file.cpu_faults;
	st.evictions = f->file.evictions;
	pthread_rwlock_unlock(&f->data_lock);
	fuse_reply_ioctl(req, 0, &st, sizeof(st));
}

void hmmfs_ll_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		    struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		    size_t in_bufsz, size_t out_bufsz)
{
	struct hmmfs_inode *inode = hmmfs_inode_get(ino);

	if (flags & FUSE_IOCTL_COMPAT) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	switch (cmd) {
	case HMM_IOC_MIGRATE:
		if (in_bufsz != sizeof(struct hmm_migrate) || out_bufsz != sizeof(struct hmm_migrate))
			break;
		if (!S_ISREG(inode->type)) {
			fuse_reply_err(req, ENOTTY);
			return;
		}
		ioctl_migrate(req, ino, inode, in_buf);
		return;
	case HMM_IOC_RESIDENCY:
		if (in_bufsz != sizeof(struct hmm_residency) || out_bufsz != sizeof(struct hmm_residency))
			break;
		if (!S_ISREG(inode->type)) {
			fuse_reply_err(req, ENOTTY);
			return;
		}
		ioctl_residency(req, inode, in_buf);
		return;
	case HMM_IOC_FILE_STAT:
		if (out_bufsz != sizeof(struct hmm_file_stat))
			break;
		if (!S_ISREG(inode->type)) {
			fuse_reply_err(req, ENOTTY);
			return;
		}
		ioctl_file_stat(req, inode);
		return;
	case HMM_IOC_DEVICE_INFO:
		if (in_bufsz != sizeof(struct hmm_device_info) ||
		    out_bufsz != sizeof(struct hmm_device_info))
			break;
		ioctl_device_info(req, in_buf);
		return;
	case HMM_IOC_ATTACH:
		if (in_bufsz != sizeof(struct hmm_attach) || out_bufsz != sizeof(struct hmm_attach))
			break;
		hmmfs_session_ioctl_attach(req, in_buf);
		return;
	case HMM_IOC_GRANT:
		if (in_bufsz != sizeof(struct hmm_grant) || out_bufsz != sizeof(struct hmm_grant))
			break;
		if (!S_ISREG(inode->type)) {
			fuse_reply_err(req, ENOTTY);
			return;
		}
		hmmfs_session_ioctl_grant(req, inode, fi, in_buf);
		return;
	case HMM_IOC_DEVICE_PAGES:
		if (in_bufsz != sizeof(struct hmm_device_pages) ||
		    out_bufsz != sizeof(struct hmm_device_pages))
			break;
		if (!S_ISREG(inode->type)) {
			fuse_reply_err(req, ENOTTY);
			return;
		}
		hmmfs_session_ioctl_device_pages(req, inode, in_buf);
		return;
	}
	fuse_reply_err(req, ENOTTY);
}
