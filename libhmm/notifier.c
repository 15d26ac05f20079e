/* SPDX-License-Identifier: MIT */
/*
 * Interval notifiers on this process's address space, with the kernel's
 * sequence protocol (the interval part of mm/mmu_notifier.c).
 *
 * The address space ("the mm": there is one per process) keeps
 * invalidate_seq: even while no invalidation that hits a subscription is
 * in progress, odd while at least one is.  Every subscription keeps its own
 * invalidate_seq, always odd:
 *  - at insertion it is the mm's minus one (idle: it differs from the
 *    mm's, so read_begin does not wait), or the mm's own odd value when
 *    invalidations are in progress (read_begin waits for them, since the
 *    new subscription may have missed one);
 *  - an invalidate callback stores its cur_seq (the mm's odd value) there
 *    with hmm_interval_set_seq(), under the driver lock.
 * read_begin returns the subscription's value, first waiting for the mm's
 * to move on if they are equal (that subscription is being invalidated
 * now); read_retry, under the driver lock, says whether it changed since.
 *
 * Walking the subscriptions.  The list is only changed while no
 * invalidation is in progress (mm.active == 0): an insertion during one is
 * deferred to the end of the last, and so is a removal when a walk may be
 * using the subscription (invalidate_seq odd), the remover waiting for the
 * mm's invalidate_seq to move.  So a walk runs without the lock and the
 * callbacks may sleep.  The list is kept sorted by start and scanned
 * linearly: a mirror has few subscriptions.
 *
 * Locking: mm.lock is a leaf, never held while calling a callback.
 *
 * fork: the child's address space has no subscriptions (as the kernel's
 * new mm has none); the parent's, copied into the child, are forgotten.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <stdlib.h>

struct hmm_interval_notifier {
	uint64_t start, end; /* [start, end) */
	const struct hmm_interval_notifier_ops *ops;
	void *priv;
	uint64_t invalidate_seq;  /* odd; atomic */
	bool linked;              /* on mm.subs; protected by mm.lock */
	uint64_t forks;           /* mm.forks when inserted */
	bool deferred_remove;     /* unlink at the end of the invalidations */
	struct hmm_interval_notifier *next;          /* on mm.subs */
	struct hmm_interval_notifier *deferred_next; /* on mm.deferred */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t moved;  /* invalidate_seq moved on */
	uint64_t invalidate_seq;
	unsigned active;       /* invalidations between start and end */
	struct hmm_interval_notifier *subs;     /* sorted by start */
	struct hmm_interval_notifier *deferred; /* to insert or remove at the end */
	uint64_t forks;        /* fork children this process is (fork_child) */
	pthread_once_t once;
} mm = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.moved = PTHREAD_COND_INITIALIZER,
	.invalidate_seq = 2,
	.once = PTHREAD_ONCE_INIT,
};

static void fork_prepare(void)
{
	pthread_mutex_lock(&mm.lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&mm.lock);
}

static void fork_child(void)
{
	pthread_mutex_init(&mm.lock, NULL);
	pthread_cond_init(&mm.moved, NULL);
	mm.invalidate_seq = (mm.invalidate_seq | 1) + 1;
	mm.active = 0;
	mm.subs = NULL;
	mm.deferred = NULL;
	mm.forks++; /* the parent's subscriptions are no child's */
}

static void mm_init(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static bool overlaps(const struct hmm_interval_notifier *sub, uint64_t start, uint64_t end)
{
	return sub->start < end && start < sub->end;
}

/* Context: mm.lock held, mm.active == 0. */
static void link_sorted(struct hmm_interval_notifier *sub)
{
	struct hmm_interval_notifier **pp = &mm.subs;

	while (*pp && (*pp)->start < sub->start)
		pp = &(*pp)->next;
	sub->next = *pp;
	*pp = sub;
	sub->linked = true;
}

/* Context: mm.lock held, mm.active == 0. */
static void unlink_sub(struct hmm_interval_notifier *sub)
{
	struct hmm_interval_notifier **pp = &mm.subs;

	while (*pp != sub)
		pp = &(*pp)->next;
	*pp = sub->next;
	sub->linked = false;
}

HMM_EXPORT int hmm_interval_notifier_insert(uint64_t start, uint64_t length,
					    const struct hmm_interval_notifier_ops *ops, void *priv,
					    struct hmm_interval_notifier **out)
{
	struct hmm_interval_notifier *sub;

	if (!length || start + length < start || !ops || !ops->invalidate || !out)
		return -EINVAL;
	pthread_once(&mm.once, mm_init);
	sub = hmm__calloc(1, sizeof(*sub));
	if (!sub)
		return -ENOMEM;
	sub->start = start;
	sub->end = start + length;
	sub->ops = ops;
	sub->priv = priv;
	pthread_mutex_lock(&mm.lock);
	sub->forks = mm.forks;
	if (mm.active) {
		/* It may have missed an invalidation in progress: read_begin
		 * waits for them all to end. */
		mm.invalidate_seq |= 1;
		__atomic_store_n(&sub->invalidate_seq, mm.invalidate_seq, __ATOMIC_RELAXED);
		sub->deferred_next = mm.deferred;
		mm.deferred = sub;
	} else {
		__atomic_store_n(&sub->invalidate_seq, mm.invalidate_seq - 1, __ATOMIC_RELAXED);
		link_sorted(sub);
	}
	pthread_mutex_unlock(&mm.lock);
	*out = sub;
	return 0;
}

HMM_EXPORT void hmm_interval_notifier_remove(struct hmm_interval_notifier *sub)
{
	uint64_t seq = 0;

	if (!sub)
		return;
	pthread_mutex_lock(&mm.lock);
	if (sub->forks != mm.forks) {
		/* Inherited from a fork's parent: on no list of this process. */
	} else if (!sub->linked) {
		/* Inserted during invalidations and not linked yet: drop it
		 * from the deferred list. */
		struct hmm_interval_notifier **pp = &mm.deferred;

		while (*pp && *pp != sub)
			pp = &(*pp)->deferred_next;
		if (*pp)
			*pp = sub->deferred_next;
	} else if (mm.invalidate_seq & 1) {
		/* A walk may be calling it: unlinked at the end, and we wait. */
		sub->deferred_remove = true;
		sub->deferred_next = mm.deferred;
		mm.deferred = sub;
		seq = mm.invalidate_seq;
		while (mm.invalidate_seq == seq)
			pthread_cond_wait(&mm.moved, &mm.lock);
	} else {
		unlink_sub(sub);
	}
	pthread_mutex_unlock(&mm.lock);
	hmm__free(sub);
}

HMM_EXPORT void *hmm_interval_notifier_priv(const struct hmm_interval_notifier *sub)
{
	return sub->priv;
}

HMM_EXPORT uint64_t hmm_interval_read_begin(struct hmm_interval_notifier *sub)
{
	uint64_t seq;

	pthread_mutex_lock(&mm.lock);
	seq = __atomic_load_n(&sub->invalidate_seq, __ATOMIC_RELAXED);
	/* Being invalidated right now: the device must not read yet. */
	while (seq == mm.invalidate_seq)
		pthread_cond_wait(&mm.moved, &mm.lock);
	pthread_mutex_unlock(&mm.lock);
	return seq;
}

HMM_EXPORT bool hmm_interval_read_retry(struct hmm_interval_notifier *sub, uint64_t seq)
{
	return __atomic_load_n(&sub->invalidate_seq, __ATOMIC_RELAXED) != seq;
}

HMM_EXPORT bool hmm_interval_check_retry(struct hmm_interval_notifier *sub, uint64_t seq)
{
	return __atomic_load_n(&sub->invalidate_seq, __ATOMIC_ACQUIRE) != seq;
}

HMM_EXPORT void hmm_interval_set_seq(struct hmm_interval_notifier *sub, uint64_t cur_seq)
{
	__atomic_store_n(&sub->invalidate_seq, cur_seq, __ATOMIC_RELEASE);
}

bool hmm__interval_covers(const struct hmm_interval_notifier *sub, uint64_t start, uint64_t end)
{
	return start >= sub->start && end <= sub->end;
}

void hmm__invalidate_start(const struct hmm_notifier_range *r)
{
	struct hmm_interval_notifier *sub;
	uint64_t cur_seq = 0;

	pthread_once(&mm.once, mm_init);
	pthread_mutex_lock(&mm.lock);
	mm.active++;
	for (sub = mm.subs; sub && sub->start < r->end; sub = sub->next)
		if (overlaps(sub, r->start, r->end))
			break;
	if (sub && sub->start < r->end) {
		mm.invalidate_seq |= 1;
		cur_seq = mm.invalidate_seq;
	} else {
		sub = NULL;
	}
	pthread_mutex_unlock(&mm.lock);

	/* The list cannot change until the matching hmm__invalidate_end. */
	for (; sub && sub->start < r->end; sub = sub->next)
		if (overlaps(sub, r->start, r->end))
			sub->ops->invalidate(sub, r, cur_seq);
}

void hmm__invalidate_end(const struct hmm_notifier_range *r)
{
	(void)r;
	pthread_mutex_lock(&mm.lock);
	HMM_ASSERT(mm.active > 0);
	if (--mm.active == 0) {
		while (mm.deferred) {
			struct hmm_interval_notifier *sub = mm.deferred;

			mm.deferred = sub->deferred_next;
			if (sub->deferred_remove)
				unlink_sub(sub); /* its remover frees it once woken */
			else
				link_sorted(sub);
		}
		if (mm.invalidate_seq & 1) {
			mm.invalidate_seq++;
			pthread_cond_broadcast(&mm.moved);
		}
	}
	pthread_mutex_unlock(&mm.lock);
	/* Device pages of anonymous memory the change took: every mirror has
	 * dropped them now. */
	hmm__anon_reap();
}
