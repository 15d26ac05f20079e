/* SPDX-License-Identifier: MIT */
/*
 * test_notifier.c - interval notifiers and the sequence protocol
 * (libhmm/notifier.c): which subscriptions an invalidation reaches and with
 * what, read_begin waiting for an invalidation in progress, insertion and
 * removal during one, fork, and a mirror model hammered by invalidating and
 * reading threads in which a device entry may never outlive the CPU value
 * it was read from.  Invalidations are driven through the internal entry
 * points that the address-space sources use.
 */
#define _GNU_SOURCE
#include "hmm-internal.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A subscriber that records what it was told. */
struct rec {
	pthread_mutex_t lock;
	unsigned calls;
	struct hmm_notifier_range last;
	uint64_t last_seq;
	/* If set, the callback blocks until release is set. */
	bool hold, inside, release;
	pthread_cond_t cond;
};

static bool rec_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			   uint64_t cur_seq)
{
	struct rec *rc = hmm_interval_notifier_priv(sub);

	pthread_mutex_lock(&rc->lock);
	hmm_interval_set_seq(sub, cur_seq);
	rc->calls++;
	rc->last = *r;
	rc->last_seq = cur_seq;
	rc->inside = true;
	pthread_cond_broadcast(&rc->cond);
	while (rc->hold && !rc->release)
		pthread_cond_wait(&rc->cond, &rc->lock);
	rc->inside = false;
	pthread_mutex_unlock(&rc->lock);
	return true;
}

static const struct hmm_interval_notifier_ops rec_ops = { .invalidate = rec_invalidate };

static void rec_init(struct rec *rc)
{
	memset(rc, 0, sizeof(*rc));
	pthread_mutex_init(&rc->lock, NULL);
	pthread_cond_init(&rc->cond, NULL);
}

static void invalidate(uint64_t start, uint64_t end, enum hmm_notify_event ev, const void *owner)
{
	struct hmm_notifier_range r = { start, end, ev, owner };

	hmm__invalidate_start(&r);
	hmm__invalidate_end(&r);
}

Test(notifier, bad_arguments_are_refused)
{
	struct hmm_interval_notifier *sub = NULL;
	struct rec rc;

	rec_init(&rc);
	cr_assert_eq(hmm_interval_notifier_insert(0x1000, 0, &rec_ops, &rc, &sub), -EINVAL);
	cr_assert_eq(hmm_interval_notifier_insert(UINT64_MAX - 10, 100, &rec_ops, &rc, &sub),
		     -EINVAL);
	cr_assert_eq(hmm_interval_notifier_insert(0x1000, 10, NULL, &rc, &sub), -EINVAL);
	cr_assert_eq(hmm_interval_notifier_insert(0x1000, 10, &rec_ops, &rc, NULL), -EINVAL);
	cr_assert_null(sub);
	hmm_interval_notifier_remove(NULL); /* harmless */
}

Test(notifier, only_overlapping_subscriptions_are_called_with_the_event_and_owner)
{
	struct hmm_interval_notifier *a, *b, *c;
	struct rec ra, rb, rcc;
	static const int owner;
	uint64_t first_seq;

	rec_init(&ra);
	rec_init(&rb);
	rec_init(&rcc);
	cr_assert_eq(hmm_interval_notifier_insert(0x10000, 0x10000, &rec_ops, &ra, &a), 0);
	cr_assert_eq(hmm_interval_notifier_insert(0x30000, 0x1000, &rec_ops, &rb, &b), 0);
	cr_assert_eq(hmm_interval_notifier_insert(0x18000, 0x20000, &rec_ops, &rcc, &c), 0);
	cr_assert_eq(hmm_interval_notifier_priv(b), &rb);

	invalidate(0x20000, 0x30000, HMM_NOTIFY_UNMAP, NULL); /* only c: a ends at 0x20000 */
	cr_assert_eq(ra.calls, 0);
	cr_assert_eq(rb.calls, 0, "b starts where the range ends");
	cr_assert_eq(rcc.calls, 1);
	cr_assert_eq(rcc.last.start, 0x20000);
	cr_assert_eq(rcc.last.end, 0x30000);
	cr_assert_eq(rcc.last.event, HMM_NOTIFY_UNMAP);
	cr_assert_eq(rcc.last_seq & 1, 1, "cur_seq is odd");
	first_seq = rcc.last_seq;

	invalidate(0x1f000, 0x30001, HMM_NOTIFY_MIGRATE, &owner);
	cr_assert_eq(ra.calls, 1);
	cr_assert_eq(rb.calls, 1);
	cr_assert_eq(rcc.calls, 2);
	cr_assert_eq(rb.last.event, HMM_NOTIFY_MIGRATE);
	cr_assert_eq(rb.last.owner, &owner);
	cr_assert_gt(rb.last_seq, first_seq, "a later invalidation has a later sequence");
	cr_assert_eq(rb.last_seq, rcc.last_seq, "one invalidation, one sequence");

	invalidate(0x40000, 0x50000, HMM_NOTIFY_CLEAR, NULL);
	cr_assert_eq(ra.calls + rb.calls + rcc.calls, 4, "nobody covers [0x40000, 0x50000)");

	hmm_interval_notifier_remove(b);
	invalidate(0, UINT64_MAX, HMM_NOTIFY_RELEASE, NULL);
	cr_assert_eq(rb.calls, 1, "a removed subscription is never called again");
	cr_assert_eq(ra.calls, 2);
	hmm_interval_notifier_remove(a);
	hmm_interval_notifier_remove(c);
}

Test(notifier, read_retry_sees_an_invalidation_and_a_new_read_begin_does_not)
{
	struct hmm_interval_notifier *sub;
	struct rec rc;
	uint64_t seq, seq2;

	rec_init(&rc);
	cr_assert_eq(hmm_interval_notifier_insert(0x100000, 0x1000, &rec_ops, &rc, &sub), 0);
	seq = hmm_interval_read_begin(sub);
	cr_assert_eq(seq & 1, 1);
	cr_assert_not(hmm_interval_read_retry(sub, seq));
	cr_assert_not(hmm_interval_check_retry(sub, seq));
	invalidate(0x100800, 0x100900, HMM_NOTIFY_PROTECTION_VMA, NULL);
	cr_assert(hmm_interval_read_retry(sub, seq));
	cr_assert(hmm_interval_check_retry(sub, seq));
	seq2 = hmm_interval_read_begin(sub);
	cr_assert_neq(seq2, seq);
	cr_assert_not(hmm_interval_read_retry(sub, seq2));
	/* An invalidation elsewhere does not disturb it. */
	invalidate(0x200000, 0x300000, HMM_NOTIFY_UNMAP, NULL);
	cr_assert_not(hmm_interval_read_retry(sub, seq2));
	hmm_interval_notifier_remove(sub);
}

struct waiter {
	struct hmm_interval_notifier *sub;
	volatile bool *ended;
	bool saw_end;
	struct rec *rc;
	bool remove;
};

static void *read_begin_thread(void *arg)
{
	struct waiter *w = arg;

	if (w->remove)
		hmm_interval_notifier_remove(w->sub);
	else
		hmm_interval_read_begin(w->sub);
	w->saw_end = __atomic_load_n(w->ended, __ATOMIC_ACQUIRE);
	return NULL;
}

/* Start an invalidation of [start, end) whose callback on rc blocks. */
static void *held_invalidation(void *arg)
{
	struct hmm_notifier_range *r = arg;

	hmm__invalidate_start(r);
	return NULL;
}

static void wait_inside(struct rec *rc)
{
	pthread_mutex_lock(&rc->lock);
	while (!rc->inside)
		pthread_cond_wait(&rc->cond, &rc->lock);
	pthread_mutex_unlock(&rc->lock);
}

static void let_go(struct rec *rc)
{
	pthread_mutex_lock(&rc->lock);
	rc->release = true;
	pthread_cond_broadcast(&rc->cond);
	pthread_mutex_unlock(&rc->lock);
}

Test(notifier, read_begin_and_remove_wait_for_an_invalidation_in_progress)
{
	for (int remove = 0; remove <= 1; remove++) {
		struct hmm_notifier_range r = { 0x500000, 0x501000, HMM_NOTIFY_CLEAR, NULL };
		struct hmm_interval_notifier *sub;
		volatile bool ended = false;
		pthread_t inv, rd;
		struct waiter w;
		struct rec rc;

		rec_init(&rc);
		rc.hold = true;
		cr_assert_eq(hmm_interval_notifier_insert(0x500000, 0x1000, &rec_ops, &rc, &sub), 0);
		pthread_create(&inv, NULL, held_invalidation, &r);
		wait_inside(&rc);
		w = (struct waiter){ .sub = sub, .ended = &ended, .rc = &rc, .remove = remove };
		pthread_create(&rd, NULL, read_begin_thread, &w);
		/* Give the reader every chance to return early (it must not). */
		for (int i = 0; i < 50; i++)
			sched_yield();
		usleep(20000);
		let_go(&rc);
		pthread_join(inv, NULL);
		__atomic_store_n(&ended, true, __ATOMIC_RELEASE);
		hmm__invalidate_end(&r);
		pthread_join(rd, NULL);
		cr_assert(w.saw_end, "%s returned while the invalidation was in progress",
			  remove ? "remove" : "read_begin");
		if (!remove)
			hmm_interval_notifier_remove(sub);
	}
}

Test(notifier, a_subscription_inserted_during_an_invalidation_waits_for_its_end_then_sees_the_next)
{
	struct hmm_notifier_range r = { 0x700000, 0x701000, HMM_NOTIFY_UNMAP, NULL };
	struct hmm_interval_notifier *holder, *late;
	struct rec rh, rl;
	volatile bool ended = false;
	pthread_t inv, rd;
	struct waiter w;

	rec_init(&rh);
	rec_init(&rl);
	rh.hold = true;
	cr_assert_eq(hmm_interval_notifier_insert(0x700000, 0x1000, &rec_ops, &rh, &holder), 0);
	pthread_create(&inv, NULL, held_invalidation, &r);
	wait_inside(&rh);
	cr_assert_eq(hmm_interval_notifier_insert(0x700000, 0x2000, &rec_ops, &rl, &late), 0);
	w = (struct waiter){ .sub = late, .ended = &ended };
	pthread_create(&rd, NULL, read_begin_thread, &w);
	usleep(20000);
	let_go(&rh);
	pthread_join(inv, NULL);
	__atomic_store_n(&ended, true, __ATOMIC_RELEASE);
	hmm__invalidate_end(&r);
	pthread_join(rd, NULL);
	cr_assert(w.saw_end, "read_begin on a subscription that may have missed an invalidation "
			     "must wait for it");
	cr_assert_eq(rl.calls, 0, "it was not in the list the invalidation walked");
	invalidate(0x701000, 0x702000, HMM_NOTIFY_UNMAP, NULL);
	cr_assert_eq(rl.calls, 1, "linked at the end of the invalidation");
	cr_assert_eq(rh.calls, 1);
	hmm_interval_notifier_remove(holder);
	hmm_interval_notifier_remove(late);
}

Test(notifier, a_forked_child_starts_with_no_subscriptions)
{
	struct hmm_interval_notifier *sub;
	struct rec rc;
	int status;
	pid_t pid;

	rec_init(&rc);
	cr_assert_eq(hmm_interval_notifier_insert(0x900000, 0x1000, &rec_ops, &rc, &sub), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		invalidate(0x900000, 0x901000, HMM_NOTIFY_UNMAP, NULL);
		_exit(rc.calls == 0 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child's invalidation called the parent's subscription");
	invalidate(0x900000, 0x901000, HMM_NOTIFY_UNMAP, NULL);
	cr_assert_eq(rc.calls, 1);
	hmm_interval_notifier_remove(sub);
}

/*
 * A mirror model.  The "CPU page table" is cpu[] (one value per page), which
 * only invalidating threads change, between hmm__invalidate_start and _end.
 * The "device" caches values in dev[] under the driver lock, following the
 * protocol.  Invariant, checked under the driver lock after every install:
 * every cached value equals the CPU's current one.
 */
#define M_PAGES 64
#define M_BASE 0x40000000ull
#define M_PAGE 4096ull

static struct {
	pthread_mutex_t driver;
	uint64_t cpu[M_PAGES];       /* atomic */
	bool valid[M_PAGES];         /* under driver */
	uint64_t dev[M_PAGES];       /* under driver */
	uint64_t violations, installs, retries; /* under driver */
	struct hmm_interval_notifier *sub;
	bool stop; /* atomic */
} model = { .driver = PTHREAD_MUTEX_INITIALIZER };

static bool model_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			     uint64_t cur_seq)
{
	pthread_mutex_lock(&model.driver);
	hmm_interval_set_seq(sub, cur_seq);
	for (uint64_t p = 0; p < M_PAGES; p++) {
		uint64_t va = M_BASE + p * M_PAGE;

		if (va < r->end && va + M_PAGE > r->start)
			model.valid[p] = false;
	}
	pthread_mutex_unlock(&model.driver);
	return true;
}

static const struct hmm_interval_notifier_ops model_ops = { .invalidate = model_invalidate };

static void *model_cpu(void *arg)
{
	uint64_t x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;

	while (!__atomic_load_n(&model.stop, __ATOMIC_ACQUIRE)) {
		uint64_t first, n;
		struct hmm_notifier_range r;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		first = x % M_PAGES;
		n = 1 + (x >> 20) % 8;
		if (first + n > M_PAGES)
			n = M_PAGES - first;
		r = (struct hmm_notifier_range){ M_BASE + first * M_PAGE,
						 M_BASE + (first + n) * M_PAGE, HMM_NOTIFY_CLEAR,
						 NULL };
		hmm__invalidate_start(&r);
		for (uint64_t p = first; p < first + n; p++)
			__atomic_add_fetch(&model.cpu[p], 1, __ATOMIC_RELEASE);
		hmm__invalidate_end(&r);
	}
	return NULL;
}

static void *model_device(void *arg)
{
	uint64_t x = (uintptr_t)arg * 0xD1B54A32D192ED03ull + 7, snap[8];

	while (!__atomic_load_n(&model.stop, __ATOMIC_ACQUIRE)) {
		uint64_t first, n, seq;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		first = x % M_PAGES;
		n = 1 + (x >> 20) % 8;
		if (first + n > M_PAGES)
			n = M_PAGES - first;
		for (;;) {
			seq = hmm_interval_read_begin(model.sub);
			for (uint64_t p = 0; p < n; p++)
				snap[p] = __atomic_load_n(&model.cpu[first + p], __ATOMIC_ACQUIRE);
			pthread_mutex_lock(&model.driver);
			if (!hmm_interval_read_retry(model.sub, seq))
				break;
			model.retries++;
			pthread_mutex_unlock(&model.driver);
		}
		for (uint64_t p = 0; p < n; p++) {
			model.dev[first + p] = snap[p];
			model.valid[first + p] = true;
		}
		model.installs++;
		for (uint64_t p = 0; p < M_PAGES; p++)
			if (model.valid[p] &&
			    model.dev[p] != __atomic_load_n(&model.cpu[p], __ATOMIC_ACQUIRE))
				model.violations++;
		pthread_mutex_unlock(&model.driver);
	}
	return NULL;
}

Test(notifier, a_device_entry_never_outlives_the_cpu_value_it_was_read_from)
{
	pthread_t cpu[2], dev[2];

	cr_assert_eq(hmm_interval_notifier_insert(M_BASE, M_PAGES * M_PAGE, &model_ops, NULL,
						  &model.sub), 0);
	for (uintptr_t i = 0; i < 2; i++) {
		pthread_create(&cpu[i], NULL, model_cpu, (void *)(i + 1));
		pthread_create(&dev[i], NULL, model_device, (void *)(i + 1));
	}
	usleep(1500000);
	__atomic_store_n(&model.stop, true, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++) {
		pthread_join(cpu[i], NULL);
		pthread_join(dev[i], NULL);
	}
	cr_log_info("installs %llu, retries %llu", (unsigned long long)model.installs,
		    (unsigned long long)model.retries);
	cr_assert_gt(model.installs, 100, "the devices hardly ran");
	cr_assert_gt(model.retries, 0, "no read ever raced an invalidation: the test proves nothing");
	cr_assert_eq(model.violations, 0, "%llu device entries outlived their CPU value",
		     (unsigned long long)model.violations);
	hmm_interval_notifier_remove(model.sub);
}
