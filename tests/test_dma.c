/* SPDX-License-Identifier: MIT */
/*
 * test_dma.c - the DMA engines of libhmm (libhmm/dma.c), tested directly
 * against the internal interface: copies of every shape land byte for byte
 * and touch nothing else, batches are split across engines correctly, fences
 * track their work from several threads at once, destroy finishes queued
 * work, and the counters add up.
 *
 * Throttling is checked only through lower bounds on time, which hold however
 * loaded the machine is: a copy can be late, never early.  No test asserts
 * that anything is fast.
 */
#define _GNU_SOURCE
#include "hmm-internal.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUARD 64
#define GUARD_BYTE 0xA5

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Bytes that differ from copy to copy and from offset to offset. */
static void fill_random(unsigned char *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)(x >> 24);
	}
}

/* Index of the first byte of p[0, len) that is not b, or -1. */
static long first_not(const unsigned char *p, size_t len, unsigned char b)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != b)
			return (long)i;
	return -1;
}

static long first_diff(const unsigned char *a, const unsigned char *b, size_t len)
{
	if (!memcmp(a, b, len))
		return -1;
	for (size_t i = 0; i < len; i++)
		if (a[i] != b[i])
			return (long)i;
	return -1;
}

static struct hmm__dma *make_dma(unsigned engines, uint64_t bw, uint64_t latency_ns)
{
	struct hmm__dma *dma = NULL;
	int err = hmm__dma_create(engines, bw, latency_ns, -1, &dma);

	cr_assert_eq(err, 0, "hmm__dma_create(%u): %s", engines, strerror(-err));
	cr_assert_not_null(dma);
	cr_assert_eq(hmm__dma_engines(dma), engines);
	return dma;
}

static void *xmalloc(size_t len)
{
	void *p = malloc(len ? len : 1);

	cr_assert_not_null(p, "malloc(%zu)", len);
	return p;
}

/* ---------------------------------------------------------------- one copy */

struct copy_case {
	size_t len;
	size_t src_off; /* from a 4 KiB-aligned base */
	size_t dst_off;
	unsigned engines;
};

ParameterizedTestParameters(dma, a_copy_of_any_size_and_alignment_lands_byte_exact)
{
	static struct copy_case cases[] = {
		{ 0, 0, 0, 1 },              /* empty: allowed, completes */
		{ 0, 3, 5, 2 },
		{ 1, 0, 0, 1 },
		{ 7, 1, 3, 2 },
		{ 4095, 0, 1, 1 },
		{ 4096, 0, 0, 2 },
		{ 4097, 4095, 17, 2 },
		{ 65539, 11, 0, 1 },
		{ 256 << 10, 0, 0, 2 },      /* one share: too small to split */
		{ (512 << 10) + 1, 0, 0, 2 },  /* just big enough for two engines */
		{ (1 << 20) + 4095, 1, 4093, 2 },
		{ (3 << 20) + 17, 4000, 96, 3 },  /* uneven shares */
		{ (3 << 20) + 17, 0, 0, 64 },     /* more engines than shares */
		{ 8 << 20, 0, 0, 2 },
		{ (8 << 20) - 5, 13, 4096, 4 },
	};
	return cr_make_param_array(struct copy_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct copy_case *c, dma, a_copy_of_any_size_and_alignment_lands_byte_exact)
{
	struct hmm__dma *dma = make_dma(c->engines, 0, 0);
	unsigned char *src, *dst, *s, *d;
	struct hmm__dma_stats st;
	struct hmm__dma_copy copy;
	long bad;

	cr_assert_eq(posix_memalign((void **)&src, 4096, c->len + c->src_off + 1), 0);
	cr_assert_eq(posix_memalign((void **)&dst, 4096, c->len + c->dst_off + 2 * GUARD), 0);
	s = src + c->src_off;
	d = dst + c->dst_off + GUARD;
	fill_random(s, c->len, c->len + 1);
	memset(dst, GUARD_BYTE, c->len + c->dst_off + 2 * GUARD);

	copy = (struct hmm__dma_copy){ .dst = d, .src = s, .len = c->len };
	cr_assert_eq(hmm__dma_copy_sync(dma, &copy, 1), 0);

	bad = first_diff(d, s, c->len);
	cr_assert_eq(bad, -1, "%zu bytes, %u engines: byte %ld differs", c->len, c->engines, bad);
	cr_assert_eq(first_not(d - GUARD, GUARD, GUARD_BYTE), -1, "wrote before dst");
	cr_assert_eq(first_not(d + c->len, GUARD, GUARD_BYTE), -1, "wrote past dst + len");

	hmm__dma_stats(dma, &st);
	cr_assert_eq(st.copies, 1, "a copy split over engines counts once, not %llu",
		     (unsigned long long)st.copies);
	cr_assert_eq(st.bytes, c->len);
	hmm__dma_destroy(dma);
	free(src);
	free(dst);
}

/* ---------------------------------------------------------------- batches */

/*
 * n copies of assorted small lengths gathered from scattered places of src
 * into scattered places of dst, with a gap between destinations that must
 * stay untouched.
 */
static void scatter_batch(unsigned engines, size_t n, size_t maxlen)
{
	struct hmm__dma *dma = make_dma(engines, 0, 0);
	struct hmm__dma_copy *copies = xmalloc(n * sizeof(*copies));
	size_t dst_len = n * (maxlen + 8), src_len = n * maxlen + 4096, total = 0;
	unsigned char *src = xmalloc(src_len), *dst = xmalloc(dst_len);
	struct hmm__dma_stats st;
	size_t doff = 0;

	fill_random(src, src_len, n);
	memset(dst, GUARD_BYTE, dst_len);
	for (size_t i = 0; i < n; i++) {
		size_t len = (i * 7919) % (maxlen + 1);          /* includes 0 */
		size_t soff = (i * 104729) % (src_len - maxlen);

		copies[i] = (struct hmm__dma_copy){ .dst = dst + doff, .src = src + soff, .len = len };
		doff += len + 1 + i % 7;
		total += len;
	}
	cr_assert_leq(doff, dst_len);

	cr_assert_eq(hmm__dma_copy_sync(dma, copies, n), 0);

	doff = 0;
	for (size_t i = 0; i < n; i++) {
		const struct hmm__dma_copy *c = &copies[i];
		size_t gap = 1 + i % 7;
		long bad = first_diff(c->dst, c->src, c->len);

		cr_assert_eq(bad, -1, "copy %zu of %zu (%zu bytes): byte %ld differs", i, n, c->len, bad);
		cr_assert_eq(first_not((unsigned char *)c->dst + c->len, gap, GUARD_BYTE), -1,
			     "copy %zu wrote past its end", i);
		doff += c->len + gap;
	}
	cr_assert_eq(first_not(dst + doff, dst_len - doff, GUARD_BYTE), -1);

	hmm__dma_stats(dma, &st);
	cr_assert_eq(st.copies, n);
	cr_assert_eq(st.bytes, total);
	hmm__dma_destroy(dma);
	free(copies);
	free(src);
	free(dst);
}

Test(dma, many_small_copies_in_one_batch_all_land_on_one_engine)
{
	scatter_batch(1, 10000, 100);
}

Test(dma, many_small_copies_in_one_batch_all_land_when_split_over_engines)
{
	/* 4000 copies of up to 2 KiB: about 4 MiB, so shares end mid-copy. */
	scatter_batch(2, 4000, 2048);
	scatter_batch(3, 4000, 2047);
}

Test(dma, a_batch_of_only_empty_copies_completes)
{
	struct hmm__dma *dma = make_dma(2, 0, 0);
	struct hmm__dma_copy copies[5];
	struct hmm__dma_stats st;
	char byte = 'x';

	for (int i = 0; i < 5; i++)
		copies[i] = (struct hmm__dma_copy){ .dst = &byte, .src = "y", .len = 0 };
	cr_assert_eq(hmm__dma_copy_sync(dma, copies, 5), 0);
	cr_assert_eq(byte, 'x');
	hmm__dma_stats(dma, &st);
	cr_assert_eq(st.copies, 5);
	cr_assert_eq(st.bytes, 0);
	hmm__dma_destroy(dma);
}

Test(dma, submitting_no_copies_succeeds_and_leaves_the_fence_done)
{
	struct hmm__dma *dma = make_dma(1, 0, 0);
	struct hmm__fence f;

	hmm__fence_init(&f);
	cr_assert_eq(hmm__dma_submit(dma, NULL, 0, &f), 0);
	cr_assert(hmm__fence_done(&f));
	hmm__fence_wait(&f);
	hmm__fence_destroy(&f);
	cr_assert_eq(hmm__dma_copy_sync(dma, NULL, 0), 0);
	hmm__dma_destroy(dma);
}

/* ---------------------------------------------------------------- fences */

Test(dma, a_fresh_fence_is_done_and_waiting_on_it_returns_at_once)
{
	struct hmm__fence f;

	hmm__fence_init(&f);
	cr_assert(hmm__fence_done(&f));
	hmm__fence_wait(&f);
	hmm__fence_destroy(&f);
}

Test(dma, fence_done_is_false_while_a_copy_is_in_flight_and_true_after_wait)
{
	const uint64_t latency = 100 * 1000000ull; /* 100 ms */
	struct hmm__dma *dma = make_dma(1, 0, latency);
	char src[64] = "in flight", dst[64] = { 0 };
	struct hmm__dma_copy copy = { .dst = dst, .src = src, .len = sizeof(src) };
	bool checked = false;

	for (int attempt = 0; attempt < 5 && !checked; attempt++) {
		struct hmm__fence f;
		uint64_t t0, t1;
		bool done;

		hmm__fence_init(&f);
		t0 = now_ns();
		cr_assert_eq(hmm__dma_submit(dma, &copy, 1, &f), 0);
		done = hmm__fence_done(&f);
		t1 = now_ns();
		/* The copy cannot complete within latency of its submission;
		 * if this thread was descheduled longer than that, the
		 * observation proves nothing and we try again. */
		if (t1 - t0 < latency) {
			cr_assert_not(done, "fence done %llu ns after submit, latency is %llu",
				      (unsigned long long)(t1 - t0), (unsigned long long)latency);
			checked = true;
		}
		hmm__fence_wait(&f);
		cr_assert(hmm__fence_done(&f));
		cr_assert_str_eq(dst, "in flight");
		hmm__fence_destroy(&f);
		memset(dst, 0, sizeof(dst));
	}
	if (!checked)
		cr_log_warn("machine too loaded to observe a fence in flight");
	hmm__dma_destroy(dma);
}

Test(dma, one_fence_covers_several_submissions)
{
	struct hmm__dma *dma = make_dma(2, 0, 1000000);
	unsigned char src[8][4096], dst[8][4096];
	struct hmm__fence f;

	fill_random(&src[0][0], sizeof(src), 8);
	memset(dst, 0, sizeof(dst));
	hmm__fence_init(&f);
	for (int i = 0; i < 8; i++) {
		struct hmm__dma_copy c = { .dst = dst[i], .src = src[i], .len = sizeof(src[i]) };

		cr_assert_eq(hmm__dma_submit(dma, &c, 1, &f), 0);
	}
	hmm__fence_wait(&f);
	cr_assert_eq(memcmp(dst, src, sizeof(src)), 0);
	hmm__fence_destroy(&f);
	hmm__dma_destroy(dma);
}

/*
 * Several threads each keep three fences in flight on shared engines, wait
 * on them in an order that differs from the submission order, and check the
 * data.  They meet at a barrier every round so that submissions collide.
 */
#define FT_THREADS 4
#define FT_ROUNDS 200
#define FT_FENCES 3

struct fence_thread {
	struct hmm__dma *dma;
	pthread_barrier_t *barrier;
	unsigned id;
	unsigned failures;
	unsigned early; /* fences seen done before every copy had landed */
};

static void *fence_thread_main(void *arg)
{
	/* Sizes per fence: small (one engine), medium (a few copies), and
	 * large (split across engines). */
	static const size_t sizes[FT_FENCES] = { 100, 3 * 4096 + 5, 600 << 10 };
	struct fence_thread *t = arg;
	unsigned char *src[FT_FENCES], *dst[FT_FENCES];

	for (int k = 0; k < FT_FENCES; k++) {
		src[k] = malloc(sizes[k]);
		dst[k] = malloc(sizes[k]);
		if (!src[k] || !dst[k])
			abort();
	}
	for (unsigned r = 0; r < FT_ROUNDS; r++) {
		struct hmm__fence f[FT_FENCES];

		for (int k = 0; k < FT_FENCES; k++) {
			fill_random(src[k], sizes[k], (uint64_t)t->id << 32 | r << 2 | (unsigned)k);
			memset(dst[k], 0, sizes[k]);
			hmm__fence_init(&f[k]);
		}
		pthread_barrier_wait(t->barrier);
		for (int k = 0; k < FT_FENCES; k++) {
			/* Medium: three descriptors, the rest is one. */
			struct hmm__dma_copy c[3];
			size_t n = 1, half = sizes[k] / 2;

			c[0] = (struct hmm__dma_copy){ dst[k], src[k], sizes[k] };
			if (k == 1) {
				c[0].len = half;
				c[1] = (struct hmm__dma_copy){ dst[k] + half, src[k] + half, 1 };
				c[2] = (struct hmm__dma_copy){ dst[k] + half + 1, src[k] + half + 1,
							       sizes[k] - half - 1 };
				n = 3;
			}
			if (hmm__dma_submit(t->dma, c, n, &f[k]))
				t->failures++;
		}
		for (int k = FT_FENCES - 1; k >= 0; k--) {
			unsigned idx = (unsigned)(k + r) % FT_FENCES;

			hmm__fence_wait(&f[idx]);
			if (!hmm__fence_done(&f[idx]))
				t->early++;
			if (memcmp(dst[idx], src[idx], sizes[idx]))
				t->failures++;
		}
		for (int k = 0; k < FT_FENCES; k++)
			hmm__fence_destroy(&f[k]);
	}
	for (int k = 0; k < FT_FENCES; k++) {
		free(src[k]);
		free(dst[k]);
	}
	return NULL;
}

Test(dma, several_threads_with_several_fences_in_flight_each_see_their_own_copies)
{
	struct hmm__dma *dma = make_dma(2, 0, 0);
	struct fence_thread t[FT_THREADS];
	pthread_t tid[FT_THREADS];
	pthread_barrier_t barrier;
	struct hmm__dma_stats st;

	pthread_barrier_init(&barrier, NULL, FT_THREADS);
	for (unsigned i = 0; i < FT_THREADS; i++) {
		t[i] = (struct fence_thread){ .dma = dma, .barrier = &barrier, .id = i };
		cr_assert_eq(pthread_create(&tid[i], NULL, fence_thread_main, &t[i]), 0);
	}
	for (unsigned i = 0; i < FT_THREADS; i++) {
		pthread_join(tid[i], NULL);
		cr_assert_eq(t[i].failures, 0, "thread %u: %u rounds with wrong data", i, t[i].failures);
		cr_assert_eq(t[i].early, 0);
	}
	pthread_barrier_destroy(&barrier);
	hmm__dma_stats(dma, &st);
	cr_assert_eq(st.copies, (uint64_t)FT_THREADS * FT_ROUNDS * 5);
	hmm__dma_destroy(dma);
}

/* ---------------------------------------------------------------- create, destroy */

Test(dma, create_rejects_zero_and_more_than_64_engines_with_einval)
{
	struct hmm__dma *dma = (struct hmm__dma *)0x1;

	cr_assert_eq(hmm__dma_create(0, 0, 0, -1, &dma), -EINVAL);
	cr_assert_eq(hmm__dma_create(65, 0, 0, -1, &dma), -EINVAL);
	cr_assert_eq(hmm__dma_create(UINT32_MAX, 0, 0, -1, &dma), -EINVAL);
	cr_assert_eq(dma, (struct hmm__dma *)0x1, "out written on failure");

	cr_assert_eq(hmm__dma_create(64, 0, 0, -1, &dma), 0);
	cr_assert_eq(hmm__dma_engines(dma), 64);
	hmm__dma_destroy(dma);
}

Test(dma, create_rejects_a_numa_node_that_does_not_exist_with_einval)
{
	struct hmm__dma *dma = NULL;

	cr_assert_eq(hmm__dma_create(1, 0, 0, -2, &dma), -EINVAL);
	cr_assert_eq(hmm__dma_create(1, 0, 0, 1 << 20, &dma), -EINVAL);
	cr_assert_null(dma);
}

Test(dma, engines_bound_to_node_0_copy_correctly)
{
	struct hmm__dma *dma = NULL;
	unsigned char src[10000], dst[10000];
	struct hmm__dma_copy c = { .dst = dst, .src = src, .len = sizeof(src) };

	cr_assert_eq(hmm__dma_create(2, 0, 0, 0, &dma), 0);
	fill_random(src, sizeof(src), 42);
	cr_assert_eq(hmm__dma_copy_sync(dma, &c, 1), 0);
	cr_assert_eq(memcmp(dst, src, sizeof(src)), 0);
	hmm__dma_destroy(dma);
}

Test(dma, destroy_with_queued_work_finishes_the_work_first)
{
	/* 20 separate submissions of 64 KiB on one engine with 2 ms each:
	 * at least 40 ms of work is queued when destroy is called. */
	enum { N = 20, LEN = 64 << 10 };
	struct hmm__dma *dma = make_dma(1, 0, 2000000);
	unsigned char *src = xmalloc((size_t)N * LEN), *dst = xmalloc((size_t)N * LEN);
	struct hmm__fence f;

	fill_random(src, (size_t)N * LEN, 7);
	memset(dst, 0, (size_t)N * LEN);
	hmm__fence_init(&f);
	for (int i = 0; i < N; i++) {
		struct hmm__dma_copy c = { dst + (size_t)i * LEN, src + (size_t)i * LEN, LEN };

		cr_assert_eq(hmm__dma_submit(dma, &c, 1, &f), 0);
	}
	hmm__dma_destroy(dma);
	cr_assert(hmm__fence_done(&f), "destroy returned with copies outstanding");
	cr_assert_eq(memcmp(dst, src, (size_t)N * LEN), 0);
	hmm__fence_destroy(&f);
	free(src);
	free(dst);
}

Test(dma, destroy_of_idle_engines_returns)
{
	for (unsigned n = 1; n <= 8; n++)
		hmm__dma_destroy(make_dma(n, 0, 0));
}

/* ---------------------------------------------------------------- stats */

Test(dma, stats_count_copies_and_bytes_and_busy_time)
{
	struct hmm__dma *dma = make_dma(2, 0, 0);
	unsigned char *src = xmalloc(3 << 20), *dst = xmalloc(3 << 20);
	struct hmm__dma_copy c[3] = {
		{ dst, src, 1 << 20 },
		{ dst + (1 << 20), src + (1 << 20), 123 },
		{ dst + (2 << 20), src + (2 << 20), 1 << 20 },
	};
	struct hmm__dma_stats st;

	hmm__dma_stats(dma, &st);
	cr_assert_eq(st.copies, 0);
	cr_assert_eq(st.bytes, 0);
	cr_assert_eq(st.busy_ns, 0);

	fill_random(src, 3 << 20, 3);
	cr_assert_eq(hmm__dma_copy_sync(dma, c, 3), 0);
	cr_assert_eq(hmm__dma_copy_sync(dma, c, 1), 0);
	hmm__dma_stats(dma, &st);
	cr_assert_eq(st.copies, 4);
	cr_assert_eq(st.bytes, (2 << 20) + 123 + (1 << 20));
	cr_assert_gt(st.busy_ns, 0);
	hmm__dma_destroy(dma);
	free(src);
	free(dst);
}

/* ---------------------------------------------------------------- throttling */

/* Time one synchronous copy of len bytes, and check that it landed. */
static uint64_t timed_copy(struct hmm__dma *dma, size_t len)
{
	unsigned char *src = xmalloc(len), *dst = xmalloc(len);
	struct hmm__dma_copy c = { dst, src, len };
	uint64_t t0;

	fill_random(src, len, len);
	t0 = now_ns();
	cr_assert_eq(hmm__dma_copy_sync(dma, &c, 1), 0);
	t0 = now_ns() - t0;
	cr_assert_eq(memcmp(dst, src, len), 0);
	free(src);
	free(dst);
	return t0;
}

Test(dma, one_engine_at_100_mb_per_s_takes_at_least_len_over_bw)
{
	const uint64_t bw = 100000000, len = 10 << 20;
	const uint64_t floor = len * 1000000000ull / bw; /* 104.9 ms */
	struct hmm__dma *dma = make_dma(1, bw, 0);
	struct hmm__dma_stats st;
	uint64_t t = timed_copy(dma, len);

	cr_assert_geq(t, floor, "10 MiB at 100 MB/s in %llu ns", (unsigned long long)t);
	hmm__dma_stats(dma, &st);
	cr_assert_geq(st.busy_ns, floor, "busy_ns %llu leaves out the throttling",
		      (unsigned long long)st.busy_ns);
	hmm__dma_destroy(dma);
}

Test(dma, two_engines_at_100_mb_per_s_take_at_least_half_of_len_over_bw)
{
	/* The larger of two shares holds at least half of the bytes. */
	const uint64_t bw = 100000000, len = 10 << 20;
	struct hmm__dma *dma = make_dma(2, bw, 0);
	uint64_t t = timed_copy(dma, len);

	cr_assert_geq(t, len / 2 * 1000000000ull / bw, "%llu ns", (unsigned long long)t);
	hmm__dma_destroy(dma);
}

Test(dma, latency_delays_each_sequential_copy_on_one_engine)
{
	const uint64_t latency = 5000000; /* 5 ms */
	struct hmm__dma *dma = make_dma(1, 0, latency);
	struct hmm__dma_stats st;
	char src[10] = "abcdefghi", dst[10] = { 0 };
	uint64_t t0 = now_ns();

	for (int i = 0; i < 10; i++) {
		struct hmm__dma_copy c = { &dst[i], &src[i], 1 };

		cr_assert_eq(hmm__dma_copy_sync(dma, &c, 1), 0);
	}
	t0 = now_ns() - t0;
	cr_assert_geq(t0, 10 * latency, "10 copies at 5 ms in %llu ns", (unsigned long long)t0);
	cr_assert_str_eq(dst, "abcdefghi");
	hmm__dma_stats(dma, &st);
	cr_assert_geq(st.busy_ns, 10 * latency);
	hmm__dma_destroy(dma);
}

Test(dma, latency_applies_once_per_transfer_not_per_copy)
{
	const uint64_t latency = 5000000;
	struct hmm__dma *dma = make_dma(1, 0, latency);
	char src[10] = "0123456789", dst[10];
	struct hmm__dma_copy c[10];
	uint64_t batch, each;

	for (int i = 0; i < 10; i++)
		c[i] = (struct hmm__dma_copy){ &dst[i], &src[i], 1 };
	/* One batch of ten copies on one engine is one transfer: one latency. */
	batch = now_ns();
	cr_assert_eq(hmm__dma_copy_sync(dma, c, 10), 0);
	batch = now_ns() - batch;
	cr_assert_geq(batch, latency, "%llu ns", (unsigned long long)batch);
	cr_assert_eq(memcmp(dst, src, 10), 0);
	/* Ten submissions are ten transfers. */
	memset(dst, 0, sizeof(dst));
	each = now_ns();
	for (int i = 0; i < 10; i++)
		cr_assert_eq(hmm__dma_copy_sync(dma, &c[i], 1), 0);
	each = now_ns() - each;
	cr_assert_geq(each, 10 * latency, "%llu ns", (unsigned long long)each);
	cr_assert_eq(memcmp(dst, src, 10), 0);
	hmm__dma_destroy(dma);
}

Test(dma, an_empty_copy_still_pays_the_latency)
{
	const uint64_t latency = 20000000; /* 20 ms */
	struct hmm__dma *dma = make_dma(1, 0, latency);
	struct hmm__dma_copy c = { NULL, NULL, 0 };
	uint64_t t0 = now_ns();

	cr_assert_eq(hmm__dma_copy_sync(dma, &c, 1), 0);
	t0 = now_ns() - t0;
	cr_assert_geq(t0, latency, "%llu ns", (unsigned long long)t0);
	hmm__dma_destroy(dma);
}

Test(dma, bandwidth_and_latency_add_up)
{
	const uint64_t bw = 200000000, latency = 10000000, len = 4 << 20;
	struct hmm__dma *dma = make_dma(1, bw, latency);
	uint64_t t = timed_copy(dma, len);

	cr_assert_geq(t, latency + len * 1000000000ull / bw, "%llu ns", (unsigned long long)t);
	hmm__dma_destroy(dma);
}
