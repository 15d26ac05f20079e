/* SPDX-License-Identifier: MIT */
/*
 * The invalidator: a thread that drops ranges of files from the kernel's
 * page cache for FUSE handlers, which then reply from it.
 *
 * Some handlers must drop a range from the page cache before they reply,
 * while the kernel holds the file's i_rwsem for them: FSYNC during a
 * migration (migrate.c) and FALLOCATE or COPY_FILE_RANGE after changing
 * bytes behind the cache (fence.c).  Invalidating writes dirty pages back
 * first, as WRITE requests that a free worker must serve.  A worker that
 * invalidated itself would be one worker fewer for them: with -s, or with
 * max_threads such requests at once, none would be left and the mount
 * would hang.  So the handler queues a job and returns without replying;
 * this thread, which is not a worker, invalidates and then calls the job's
 * completion, which replies.  The kernel keeps i_rwsem until that reply.
 *
 * Jobs run one at a time, in the order they were queued.  No lock of the
 * daemon is held while a job invalidates, and nothing that holds one waits
 * for a job, so the WRITEs it waits for can always be served.
 */
#include "config.h"
#include "hmmfs.h"


static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct hmmfs_inval_job *head, **tail; /* protected by lock */
	bool stop;                            /* protected by lock */
	bool running;
	pthread_t thread;
} inv = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.tail = &inv.head,
};

/*
 * hmmfs_invalidate_now() - the job, in the calling thread.
 * Context: not a FUSE worker, or one with no other choice.
 */
void hmmfs_invalidate_now(struct hmmfs_inval_job *job)
{
	/* An error means nothing is cached to drop: the kernel forgot the
	 * inode (ENOENT), or the mount is going away. */
	fuse_lowlevel_notify_inval_inode(hmmfs.se, job->ino, job->off, job->len);
	job->done(job);
}

static void *invalidator(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&inv.lock);
	for (;;) {
		struct hmmfs_inval_job *job = inv.head;

		if (!job) {
			if (inv.stop)
				break;
			pthread_cond_wait(&inv.wake, &inv.lock);
			continue;
		}
		inv.head = job->next;
		if (!inv.head)
			inv.tail = &inv.head;
		pthread_mutex_unlock(&inv.lock);
		hmmfs_invalidate_now(job);
		pthread_mutex_lock(&inv.lock);
	}
	pthread_mutex_unlock(&inv.lock);
	return NULL;
}

/*
 * hmmfs_invalidate_async() - drop [job->off, job->off + job->len) of
 * job->ino from the page cache, then call job->done(job), from the
 * invalidator.  The caller owns job until done is called.
 * Context: a FUSE worker serving the request that done() will answer.
 */
void hmmfs_invalidate_async(struct hmmfs_inval_job *job)
{
	bool queued = false;

	job->next = NULL;
	pthread_mutex_lock(&inv.lock);
	if (inv.running && !inv.stop) {
		*inv.tail = job;
		inv.tail = &job->next;
		pthread_cond_signal(&inv.wake);
		queued = true;
	}
	pthread_mutex_unlock(&inv.lock);
	/* Before the thread starts or after it stopped, no request is being
	 * served that a WRITE could wait behind. */
	if (!queued)
		hmmfs_invalidate_now(job);
}

int hmmfs_invalidator_start(void)
{
	int err = pthread_create(&inv.thread, NULL, invalidator, NULL);

	if (err)
		return -err;
	pthread_mutex_lock(&inv.lock);
	inv.running = true;
	pthread_mutex_unlock(&inv.lock);
	return 0;
}

/* Run the jobs still queued and end the thread.  Context: after the
 * migration thread ended, which may wait for a job. */
void hmmfs_invalidator_stop(void)
{
	pthread_mutex_lock(&inv.lock);
	if (!inv.running) {
		pthread_mutex_unlock(&inv.lock);
		return;
	}
	inv.stop = true;
	pthread_cond_signal(&inv.wake);
	pthread_mutex_unlock(&inv.lock);
	pthread_join(inv.thread, NULL);
	pthread_mutex_lock(&inv.lock);
	inv.running = false;
	pthread_mutex_unlock(&inv.lock);
}
