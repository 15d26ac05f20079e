/* SPDX-License-Identifier: MIT */
/* snapshot.c - see snapshot.h. */
#include "snapshot.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

/* The driver's invalidate callback: the new sequence, under its lock. */
static bool snap_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			    uint64_t cur_seq)
{
	pthread_mutex_t *lock = hmm_interval_notifier_priv(sub);

	(void)r;
	pthread_mutex_lock(lock);
	hmm_interval_set_seq(sub, cur_seq);
	pthread_mutex_unlock(lock);
	return true;
}

static const struct hmm_interval_notifier_ops snap_ops = { .invalidate = snap_invalidate };

void snapshot_range(struct hmm_device *d, uint64_t start, size_t npages, uint64_t *pfns)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	uint64_t len = npages * (uint64_t)sysconf(_SC_PAGESIZE);
	struct hmm_interval_notifier *sub;
	struct hmm_range range = { .start = start, .end = start + len, .hmm_pfns = pfns,
				   .dev_private_owner = d };
	int err;

	cr_assert_eq(hmm_interval_notifier_insert(start, len, &snap_ops, &lock, &sub), 0);
	range.notifier = sub;
	for (;;) {
		memset(pfns, 0, npages * sizeof(*pfns));
		range.notifier_seq = hmm_interval_read_begin(sub);
		err = hmm_range_fault(&range);
		if (err == -EBUSY)
			continue;
		if (err)
			break;
		pthread_mutex_lock(&lock);
		if (!hmm_interval_read_retry(sub, range.notifier_seq)) {
			pthread_mutex_unlock(&lock);
			break;
		}
		pthread_mutex_unlock(&lock);
	}
	hmm_interval_notifier_remove(sub);
	cr_assert_eq(err, 0, "hmm_range_fault: %s", strerror(-err));
}
