/* SPDX-License-Identifier: MIT */
/*
 * test_launch.c - device kernels (libhmm/launch.c) through the real
 * libhmm.so: every work item runs exactly once, kernels compute with plain
 * malloc'd pointers through the device's TLBs, access errors stop the
 * launch with the kernel's errno, and the TLB shootdown keeps compute units
 * from using a translation after the CPU's mapping changed, while another
 * thread keeps replacing the memory they read.
 */
#define _GNU_SOURCE
#include "hmm-internal.h"

#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PS 4096UL

static struct hmm_device *dev;
static struct hmm_mirror *mir;

static void setup(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 64 << 20, .numa_node = -1,
					 .compute_units = 4 };

	cr_assert_eq(hmm_device_create(&cfg, &dev), 0);
	cr_assert_eq(hmm_mirror_create(dev, &mir), 0);
}

static void teardown(void)
{
	hmm_mirror_destroy(mir);
	cr_assert_eq(hmm_device_destroy(dev), 0);
}

TestSuite(launch, .init = setup, .fini = teardown);

static struct hmm_mirror_stats stats(void)
{
	struct hmm_mirror_stats st;

	cr_assert_eq(hmm_mirror_stats(mir, &st), 0);
	return st;
}

struct vadd {
	const float *a, *b;
	float *c;
};

static void vadd_kernel(struct hmm_kernel *k, void *arg)
{
	struct vadd *v = arg;
	uint64_t i = hmm_kernel_item(k);

	hmm_st_f32(k, &v->c[i], hmm_ld_f32(k, &v->a[i]) + hmm_ld_f32(k, &v->b[i]));
}

Test(launch, a_vector_add_on_malloced_arrays_matches_the_cpu)
{
	enum { N = 1 << 20 };
	struct vadd v = { malloc(N * sizeof(float)), malloc(N * sizeof(float)),
			  calloc(N, sizeof(float)) };

	for (int i = 0; i < N; i++) {
		((float *)v.a)[i] = (float)i;
		((float *)v.b)[i] = (float)(2 * i + 1);
	}
	cr_assert_eq(hmm_launch(mir, N, vadd_kernel, &v), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(v.c[i], (float)(3 * i + 1), "c[%d] = %f", i, v.c[i]);
	cr_assert_eq(stats().launches, 1);
	cr_assert_gt(stats().faults, 0, "the device faulted the arrays in");
	cr_assert_gt(stats().tlb_hits, stats().tlb_misses, "most accesses hit the TLB");
	cr_log_info("faults %llu, TLB hits %llu, misses %llu",
		    (unsigned long long)stats().faults, (unsigned long long)stats().tlb_hits,
		    (unsigned long long)stats().tlb_misses);
	free((void *)v.a);
	free((void *)v.b);
	free(v.c);
}

static void vadd_map_kernel(struct hmm_kernel *k, void *arg)
{
	struct vadd *v = arg;
	uint64_t i = hmm_kernel_item(k) * 1024;
	struct hmm_kernel_span sp[3] = {
		{ (void *)&v->a[i], 1024 * sizeof(float), false, NULL },
		{ (void *)&v->b[i], 1024 * sizeof(float), false, NULL },
		{ &v->c[i], 1024 * sizeof(float), true, NULL },
	};
	const float *x, *y;
	float *z;

	if (hmm_kernel_map(k, sp, 3))
		return;
	x = sp[0].addr;
	y = sp[1].addr;
	z = sp[2].addr;
	for (int j = 0; j < 1024; j++)
		z[j] = x[j] + y[j];
}

Test(launch, kernels_that_map_their_rows_compute_at_cpu_addresses)
{
	enum { N = 1 << 20 };
	struct vadd v = { malloc(N * sizeof(float)), malloc(N * sizeof(float)),
			  calloc(N, sizeof(float)) };

	for (int i = 0; i < N; i++) {
		((float *)v.a)[i] = (float)i;
		((float *)v.b)[i] = (float)(N - i);
	}
	cr_assert_eq(hmm_launch(mir, N / 1024, vadd_map_kernel, &v), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(v.c[i], (float)N, "c[%d] = %f", i, v.c[i]);
	free((void *)v.a);
	free((void *)v.b);
	free(v.c);
}

static int map_result;

static void bad_map_kernel(struct hmm_kernel *k, void *arg)
{
	struct hmm_kernel_span sp = { arg, PS, true, NULL };

	map_result = hmm_kernel_map(k, &sp, 1);
}

static void empty_map_kernel(struct hmm_kernel *k, void *arg)
{
	struct hmm_kernel_span sp = { arg, 0, false, NULL };

	map_result = hmm_kernel_map(k, &sp, 1);
}

Test(launch, mapping_an_unusable_span_fails_as_an_access_does)
{
	char *p = mmap(NULL, 2 * PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	cr_assert_eq(hmm_launch(mir, 1, bad_map_kernel, p), -EPERM, "a writable span of a "
		     "read-only mapping");
	cr_assert_eq(map_result, -EPERM);
	cr_assert_eq(mprotect(p, PS, PROT_NONE), 0);
	cr_assert_eq(hmm_launch(mir, 1, bad_map_kernel, p), -EFAULT);
	cr_assert_eq(hmm_launch(mir, 1, empty_map_kernel, p + PS), 0,
		     "an empty span is refused without stopping the launch");
	cr_assert_eq(map_result, -EINVAL);
	munmap(p, 2 * PS);
}

struct once {
	uint32_t *seen;
	uint32_t *unit;
};

static void once_kernel(struct hmm_kernel *k, void *arg)
{
	struct once *o = arg;
	uint64_t i = hmm_kernel_item(k);

	hmm_st_u32(k, &o->seen[i], hmm_ld_u32(k, &o->seen[i]) + 1);
	hmm_st_u32(k, &o->unit[i], hmm_kernel_unit(k));
}

Test(launch, every_item_runs_exactly_once_spread_over_the_units)
{
	enum { N = 100000 };
	struct once o = { calloc(N, 4), calloc(N, 4) };
	bool used[4] = { false };

	cr_assert_eq(hmm_launch(mir, N, once_kernel, &o), 0);
	cr_assert_eq(hmm_launch(mir, 0, once_kernel, &o), 0, "no items, nothing to do");
	for (int i = 0; i < N; i++) {
		cr_assert_eq(o.seen[i], 1, "item %d ran %u times", i, o.seen[i]);
		cr_assert_lt(o.unit[i], 4);
		used[o.unit[i]] = true;
	}
	cr_log_info("units used: %d %d %d %d", used[0], used[1], used[2], used[3]);
	free(o.seen);
	free(o.unit);
}

static void reader_kernel(struct hmm_kernel *k, void *arg)
{
	(void)hmm_ld_u64(k, (const uint64_t *)arg + hmm_kernel_item(k) * (PS / 8));
}

static void writer_kernel(struct hmm_kernel *k, void *arg)
{
	hmm_st_u64(k, (uint64_t *)arg + hmm_kernel_item(k) * (PS / 8), 42);
}

Test(launch, access_errors_stop_the_launch_with_the_kernels_errno)
{
	uint64_t *p = mmap(NULL, 4 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, 7, 4 * PS);
	cr_assert_eq(mprotect((char *)p + 2 * PS, PS, PROT_NONE), 0);
	cr_assert_eq(hmm_launch(mir, 4, reader_kernel, p), -EFAULT);
	cr_assert_eq(mprotect((char *)p + 2 * PS, PS, PROT_READ), 0);
	cr_assert_eq(hmm_launch(mir, 4, reader_kernel, p), 0);
	cr_assert_eq(hmm_launch(mir, 4, writer_kernel, p), -EPERM);
	cr_assert_neq(p[2 * PS / 8], 42, "a refused store changes nothing");
	cr_assert_eq(hmm_launch(NULL, 1, writer_kernel, p), -EINVAL);
	cr_assert_eq(hmm_launch(mir, 1, NULL, p), -EINVAL);
	munmap(p, 4 * PS);
}

static int nested_err;

static void nested_kernel(struct hmm_kernel *k, void *arg)
{
	(void)k;
	nested_err = hmm_launch(arg, 1, nested_kernel, arg);
}

static void unmapping_kernel(struct hmm_kernel *k, void *arg)
{
	char *p = arg;
	uint64_t i = hmm_kernel_item(k);

	/* Every unit reads its page, then unmaps it: an invalidation from
	 * inside kernels, several at once. */
	(void)hmm_ld_u64(k, (const uint64_t *)(p + i * PS));
	if (munmap(p + i * PS, PS) != 0)
		abort();
}

Test(launch, kernels_that_unmap_memory_do_not_wait_for_themselves)
{
	enum { N = 256 };
	char *p = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, 1, N * PS);
	cr_assert_eq(hmm_launch(mir, N, unmapping_kernel, p), 0);
	cr_assert_geq(stats().invalidations, N);
}

Test(launch, a_kernel_cannot_launch)
{
	cr_assert_eq(hmm_launch(mir, 1, nested_kernel, mir), 0);
	cr_assert_eq(nested_err, -EDEADLK);
}

/*
 * The shootdown.  The device reaches system memory at the CPU's addresses,
 * so a translation that outlived its invalidation shows when the page is
 * gone: the compute unit's copy would fault and crash the process.  Another
 * thread keeps replacing eight pages (mmap MAP_FIXED) and making half of
 * them inaccessible, while kernels read every word of every page through
 * their TLBs.
 */
#define SD_PAGES 8
static struct {
	uint64_t *p;
	bool stop; /* atomic */
	unsigned long efault, ok;
} sd;

static void *replacer(void *arg)
{
	uint64_t gen = 0;

	(void)arg;
	while (!__atomic_load_n(&sd.stop, __ATOMIC_ACQUIRE)) {
		uint64_t v = ++gen;
		uint64_t *q = mmap(sd.p, SD_PAGES * PS, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

		if (q != sd.p)
			abort();
		for (size_t i = 0; i < SD_PAGES * PS / 8; i++)
			q[i] = v;
		/* Take half away with a PROT_NONE mapping rather than munmap: the
		 * next MAP_FIXED must not land on whatever else (a thread's TLS,
		 * the allocator) the system put in a hole meanwhile. */
		if (gen % 2 == 0 &&
		    mmap(q + SD_PAGES * PS / 16, SD_PAGES * PS / 2, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
			abort();
		usleep(gen % 50);
	}
	return NULL;
}

/*
 * A kernel's loads through hmm_kernel_map()'s pointers are the device's.
 * ThreadSanitizer sees no device: it would take them for the compute unit
 * thread's and report the race with the replacer that this test makes on
 * purpose; they are bracketed as libhmm brackets its own device accesses.
 */
static void page_kernel(struct hmm_kernel *k, void *arg)
{
	uint64_t page = hmm_kernel_item(k) % SD_PAGES, sum = 0;
	const uint64_t *base = sd.p + page * (PS / 8);

	if (hmm_kernel_item(k) % 2) {
		/* Half the instances read the page directly, through a map. */
		struct hmm_kernel_span sp = { (void *)base, PS, false, NULL };

		/* Slowly, so that invalidations land while it reads. */
		if (hmm_kernel_map(k, &sp, 1) == 0)
			for (size_t i = 0; i < PS / 8; i++) {
				HMM_TSAN_IGNORE_BEGIN();
				sum += ((const volatile uint64_t *)sp.addr)[i];
				HMM_TSAN_IGNORE_END();
				for (volatile int d = 0; d < 20; d++)
					;
			}
	} else {
		for (size_t i = 0; i < PS / 8 && !hmm_kernel_failed(k); i++)
			sum += hmm_ld_u64(k, base + i);
	}
	hmm_st_u64(k, (uint64_t *)arg + hmm_kernel_item(k), sum);
}

Test(launch, compute_units_never_use_a_translation_after_its_invalidation)
{
	enum { ITEMS = 64 };
	uint64_t *results = calloc(ITEMS, 8);
	pthread_t t;

	sd.p = mmap(NULL, SD_PAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	cr_assert_neq(sd.p, MAP_FAILED);
	pthread_create(&t, NULL, replacer, NULL);
	for (int round = 0; round < 400; round++) {
		int err = hmm_launch(mir, ITEMS, page_kernel, results);

		if (err == -EFAULT) {
			sd.efault++;
			continue;
		}
		cr_assert_eq(err, 0);
		sd.ok++;
	}
	__atomic_store_n(&sd.stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_log_info("%lu launches, %lu -EFAULT, %llu invalidations, TLB hits %llu",
		    sd.ok, sd.efault, (unsigned long long)stats().invalidations,
		    (unsigned long long)stats().tlb_hits);
	cr_assert_gt(stats().invalidations, 20, "the replacer hardly ran");
	cr_assert_gt(sd.efault, 0, "no kernel ever met an unmapped page: the race was not run");
	cr_assert_gt(stats().tlb_hits, 10000, "the kernels hardly used their TLBs");
	munmap(sd.p, SD_PAGES * PS);
	free(results);
}
