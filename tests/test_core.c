/* SPDX-License-Identifier: MIT */
/*
 * test_core.c - libhmm's bookkeeping structures, tested directly against the
 * internal interface: the radix tree's range walk (hmm__radix_gang) against
 * a model and at the edges of the index space, the pool's bulk allocation
 * (all or nothing) and bulk free, owned memory (shared through its memfd,
 * idle chunks reclaimed, punched when the owner goes), and hmm__pages_move with pages from
 * several sources, including the failure that must leave every page where
 * it was.
 */
#define _GNU_SOURCE
#include "hmm-internal.h"

#include "rng.h"
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


/* The items of [from, end) by hmm__radix_next, one at a time: the model. */
static size_t walk_next(struct hmm__radix *r, uint64_t from, uint64_t end, uint64_t *idx,
			size_t max)
{
	size_t n = 0;

	while (n < max && from < end && hmm__radix_next(r, &from) && from < end) {
		idx[n++] = from;
		if (from == UINT64_MAX)
			break;
		from++;
	}
	return n;
}

/* Walk [from, end) with gang calls of at most step items; compare. */
static void expect_gang_matches(struct hmm__radix *r, uint64_t from, uint64_t end, size_t step)
{
	size_t cap = 8192, want_n, got_n = 0;
	uint64_t *want = malloc(cap * sizeof(*want)), *got = malloc(cap * sizeof(*got));
	void **items = malloc(cap * sizeof(*items));
	uint64_t at = from;

	want_n = walk_next(r, from, end, want, cap);
	for (;;) {
		size_t n = hmm__radix_gang(r, &at, end, items, got + got_n,
					   step < cap - got_n ? step : cap - got_n);

		for (size_t i = 0; i < n; i++)
			cr_assert_eq(items[i], (void *)(uintptr_t)(got[got_n + i] + 1),
				     "item at index %llu", (unsigned long long)got[got_n + i]);
		got_n += n;
		if (n == 0 || got_n == cap)
			break;
	}
	cr_assert_eq(got_n, want_n, "[%llu, %llu) step %zu: %zu items, the model has %zu",
		     (unsigned long long)from, (unsigned long long)end, step, got_n, want_n);
	for (size_t i = 0; i < got_n; i++)
		cr_assert_eq(got[i], want[i], "item %zu: index %llu, the model says %llu", i,
			     (unsigned long long)got[i], (unsigned long long)want[i]);
	free(want);
	free(got);
	free(items);
}

Test(radix_gang, random_sparse_sets_walk_like_radix_next_in_any_step_and_range)
{
	for (unsigned seed = 1; seed <= 20; seed++) {
		struct hmm__radix r;
		uint64_t span = seed % 2 ? 5000 : 1u << 20;

		rng_state = seed * 0x9E3779B97F4A7C15ull;
		hmm__radix_init(&r);
		for (int i = 0; i < 3000; i++) {
			uint64_t idx = rng() % span;
			int err = hmm__radix_insert(&r, idx, (void *)(uintptr_t)(idx + 1));

			cr_assert(err == 0 || err == -EEXIST);
		}
		for (int k = 0; k < 20; k++) {
			uint64_t a = rng() % span, b = a + rng() % (span - a + 1);
			size_t step = 1 + rng() % 200;

			expect_gang_matches(&r, a, b, step);
		}
		expect_gang_matches(&r, 0, UINT64_MAX, 4096);
		hmm__radix_truncate(&r, 0, NULL, NULL);
	}
}

Test(radix_gang, stops_at_end_at_max_and_resumes_where_it_stopped)
{
	struct hmm__radix r;
	uint64_t idx[8], at;
	void *items[8];

	hmm__radix_init(&r);
	for (uint64_t i = 60; i < 70; i++)
		cr_assert_eq(hmm__radix_insert(&r, i, (void *)(uintptr_t)(i + 1)), 0);
	at = 0;
	cr_assert_eq(hmm__radix_gang(&r, &at, 64, items, idx, 8), 4);
	cr_assert_eq(idx[0], 60);
	cr_assert_eq(idx[3], 63);
	cr_assert_eq(at, 64, "continues at the end: %llu", (unsigned long long)at);
	at = 60;
	cr_assert_eq(hmm__radix_gang(&r, &at, 1000, items, idx, 3), 3);
	cr_assert_eq(at, 63, "continues after the last returned: %llu", (unsigned long long)at);
	cr_assert_eq(hmm__radix_gang(&r, &at, 1000, items, idx, 8), 7);
	cr_assert_eq(idx[0], 63);
	cr_assert_eq(idx[6], 69);
	cr_assert_eq(hmm__radix_gang(&r, &at, 1000, items, idx, 8), 0);
	at = 70;
	cr_assert_eq(hmm__radix_gang(&r, &at, 70, items, idx, 8), 0, "an empty range");
	hmm__radix_truncate(&r, 0, NULL, NULL);
	at = 0;
	cr_assert_eq(hmm__radix_gang(&r, &at, 100, items, idx, 8), 0, "an empty tree");
}

Test(radix_gang, works_at_the_top_of_the_index_space)
{
	struct hmm__radix r;
	uint64_t top[] = { UINT64_MAX - 70, UINT64_MAX - 1, UINT64_MAX };
	uint64_t idx[8], at = UINT64_MAX - 100;
	void *items[8];

	hmm__radix_init(&r);
	cr_assert_eq(hmm__radix_insert(&r, 5, (void *)1), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(hmm__radix_insert(&r, top[i], (void *)(uintptr_t)(i + 2)), 0);
	/* end is exclusive: UINT64_MAX itself is beyond any range. */
	cr_assert_eq(hmm__radix_gang(&r, &at, UINT64_MAX, items, idx, 8), 2);
	cr_assert_eq(idx[0], top[0]);
	cr_assert_eq(idx[1], top[1]);
	cr_assert_eq(at, UINT64_MAX);
	at = 0;
	cr_assert_eq(hmm__radix_gang(&r, &at, UINT64_MAX, items, idx, 8), 3);
	cr_assert_eq(idx[0], 5);
	hmm__radix_truncate(&r, 0, NULL, NULL);
}

#define PAGE 4096

Test(pool_bulk, allocation_is_all_or_nothing_at_capacity)
{
	struct hmm__pool p;
	void *pages[1100], *more[200];

	cr_assert_eq(hmm__pool_init(&p, PAGE, 1024 * PAGE, -1), 0);
	cr_assert_eq(hmm__pool_alloc_bulk(&p, 1000, pages), 0);
	cr_assert_eq(hmm__pool_used(&p), 1000);
	/* Distinct, writable pages. */
	for (int i = 0; i < 1000; i++)
		memset(pages[i], i & 0xff, PAGE);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(((unsigned char *)pages[i])[PAGE - 1], i & 0xff, "page %d", i);
	cr_assert_eq(hmm__pool_alloc_bulk(&p, 25, more), -ENOSPC);
	cr_assert_eq(hmm__pool_used(&p), 1000, "a failed bulk allocation takes nothing");
	cr_assert_eq(hmm__pool_alloc_bulk(&p, 24, more), 0);
	cr_assert_eq(hmm__pool_used(&p), 1024);
	hmm__pool_free_bulk(&p, more, 24);
	hmm__pool_free_bulk(&p, pages, 1000);
	cr_assert_eq(hmm__pool_used(&p), 0);
	/* What was freed in bulk can be taken again, in any mix of calls. */
	cr_assert_eq(hmm__pool_alloc_bulk(&p, 1024, pages), 0);
	hmm__pool_free_bulk(&p, pages + 500, 524);
	for (int i = 0; i < 500; i++)
		hmm__pool_free(&p, pages[i]);
	cr_assert_eq(hmm__pool_used(&p), 0);
	hmm__pool_destroy(&p);
}

/* Another process's view of an owner's memory: its memfd mapped anew. */
static unsigned char *map_owner(struct hmm__pool_owner *o, size_t len)
{
	unsigned char *m = mmap(NULL, len, PROT_READ, MAP_SHARED, hmm__pool_owner_fd(o), 0);

	cr_assert_neq(m, MAP_FAILED, "mmap of the owner's memfd: %m");
	return m;
}

#define CHUNK (2u << 20)
#define CHUNK_PAGES (CHUNK / PAGE)

Test(pool_owned, pages_are_shared_through_the_owners_memfd_and_capacity_counts_them)
{
	struct hmm__pool p;
	struct hmm__pool_owner *a = NULL, *b = NULL;
	void *pa[600], *pb[10], *anon[CHUNK_PAGES];
	uint64_t off;
	unsigned char *view;

	cr_assert_eq(hmm__pool_init(&p, PAGE, 2 * CHUNK, -1), 0);
	cr_assert_eq(hmm__pool_alloc_owned(&p, &a, 600, pa), 0);
	cr_assert_not_null(a);
	cr_assert_eq(hmm__pool_alloc_owned(&p, &b, 10, pb), 0);
	cr_assert_neq(hmm__pool_owner_fd(a), hmm__pool_owner_fd(b));
	cr_assert_eq(hmm__pool_used(&p), 610);
	/* Capacity covers both kinds: 2 chunks' worth in all. */
	cr_assert_eq(hmm__pool_alloc_bulk(&p, 2 * CHUNK_PAGES - 609, anon), -ENOSPC);
	cr_assert_eq(hmm__pool_used(&p), 610);
	for (int i = 0; i < 600; i++)
		memset(pa[i], i & 0xff, PAGE);
	view = map_owner(a, 2 * CHUNK);
	for (int i = 0; i < 600; i++) {
		cr_assert_eq(hmm__pool_page_offset(&p, pa[i], &off), 0);
		cr_assert_eq(off % PAGE, 0);
		cr_assert_eq(view[off + PAGE / 2], i & 0xff, "page %d at offset %llu", i,
			     (unsigned long long)off);
	}
	cr_assert_eq(hmm__pool_alloc_bulk(&p, 1, anon), 0);
	cr_assert_eq(hmm__pool_page_offset(&p, anon[0], &off), -ENOENT,
		     "anonymous pages have no offset");
	hmm__pool_free(&p, anon[0]);
	hmm__pool_free_bulk(&p, pa, 600);
	hmm__pool_free_bulk(&p, pb, 10);
	cr_assert_eq(hmm__pool_used(&p), 0);
	/* Freed but idle: the memory and its data stay until the owner goes
	 * (but for the free list's link at the start of the page). */
	cr_assert_eq(hmm__pool_page_offset(&p, pa[7], &off), 0);
	off += PAGE / 2;
	cr_assert_eq(view[off], 7);
	hmm__pool_owner_destroy(&p, a);
	cr_assert_eq(view[off], 0, "the owner's memory is punched out when it goes");
	munmap(view, 2 * CHUNK);
	hmm__pool_owner_destroy(&p, b);
	hmm__pool_destroy(&p);
}

Test(pool_owned, idle_memory_of_one_owner_is_reclaimed_for_another)
{
	struct hmm__pool p;
	struct hmm__pool_owner *a = NULL, *b = NULL;
	static void *pa[2 * CHUNK_PAGES], *pb[2 * CHUNK_PAGES];
	struct hmm__pool_owner *others[8] = { NULL };
	unsigned char *view;
	uint64_t off;

	/* Capacity plus the spare budget (32 MiB) is 18 chunks. */
	cr_assert_eq(hmm__pool_init(&p, PAGE, 2 * CHUNK, -1), 0);
	cr_assert_eq(hmm__pool_alloc_owned(&p, &a, 2 * CHUNK_PAGES, pa), 0);
	memset(pa[0], 0x5a, PAGE);
	cr_assert_eq(hmm__pool_page_offset(&p, pa[0], &off), 0);
	off += PAGE / 2; /* past the free list's link once freed */
	hmm__pool_free_bulk(&p, pa, 2 * CHUNK_PAGES);
	view = map_owner(a, 2 * CHUNK);
	cr_assert_eq(view[off], 0x5a, "idle memory is kept");
	/* Owner a keeps reusing its own idle chunks: no new memory. */
	cr_assert_eq(hmm__pool_alloc_owned(&p, &a, 2 * CHUNK_PAGES, pa), 0);
	hmm__pool_free_bulk(&p, pa, 2 * CHUNK_PAGES);
	cr_assert_eq(p.nheld, 2);
	/* Eight others take two chunks each and free them: 18 held, the
	 * most allowed, and owner a's idle memory untouched. */
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(hmm__pool_alloc_owned(&p, &others[i], 2 * CHUNK_PAGES, pb), 0);
		hmm__pool_free_bulk(&p, pb, 2 * CHUNK_PAGES);
	}
	cr_assert_eq(p.nheld, 18);
	cr_assert_eq(view[off], 0x5a, "within the budget nothing was reclaimed");
	/* One more: the memory that idled longest, owner a's, goes. */
	cr_assert_eq(hmm__pool_alloc_owned(&p, &b, 2 * CHUNK_PAGES, pb), 0);
	cr_assert_eq(p.nheld, 18);
	hmm__pool_free_bulk(&p, pb, 2 * CHUNK_PAGES);
	cr_assert_eq(view[off], 0, "idle memory past the budget is punched out");
	munmap(view, 2 * CHUNK);
	/* Owner a starts again from punched memory: zeros, held again. */
	cr_assert_eq(hmm__pool_alloc_owned(&p, &a, 1, pa), 0);
	cr_assert_eq(((unsigned char *)pa[0])[PAGE / 2], 0);
	hmm__pool_free(&p, pa[0]);
	for (int i = 0; i < 8; i++)
		hmm__pool_owner_destroy(&p, others[i]);
	hmm__pool_owner_destroy(&p, a);
	hmm__pool_owner_destroy(&p, b);
	cr_assert_eq(p.nheld, 0);
	hmm__pool_destroy(&p);
}

/* Two devices and host RAM, each pool holding cap pages. */
struct rig {
	struct hmm__pool host;
	struct hmm__device *dev[2];
	struct hmm__mem mem;
};

static void rig_init(struct rig *g, uint64_t cap)
{
	struct hmm__device_config cfg = { .type = HMM__DEVICE_PRIVATE, .page_size = PAGE,
					  .capacity = cap * PAGE, .numa_node = -1,
					  .dma_engines = 2 };

	memset(g, 0, sizeof(*g));
	cr_assert_eq(hmm__pool_init(&g->host, PAGE, 4 * cap * PAGE, -1), 0);
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(hmm__device_create(i, &cfg, &g->dev[i]), 0);
	g->mem.host = &g->host;
	g->mem.devices = g->dev;
	g->mem.ndevices = 2;
	g->mem.page_size = PAGE;
}

static void rig_destroy(struct rig *g)
{
	for (unsigned i = 0; i < 2; i++)
		hmm__device_destroy(g->dev[i]);
	hmm__pool_destroy(&g->host);
}

static unsigned char byte_of(size_t page, size_t off)
{
	return (unsigned char)(page * 131 + off * 7 + 1);
}

Test(pages_move, pages_from_three_sources_arrive_intact_and_failures_move_nothing)
{
	enum { N = 900 };
	struct hmm__page *pg[N];
	void *before[N];
	struct rig g;

	rig_init(&g, 1000);
	for (size_t i = 0; i < N; i++) {
		cr_assert_eq(hmm__page_new(&g.mem, true, NULL, i, &pg[i]), 0);
		for (size_t o = 0; o < PAGE; o++)
			((unsigned char *)pg[i]->data)[o] = byte_of(i, o);
	}
	/* Spread them: a third stays in host RAM, a third on each device. */
	{
		struct hmm__page *to0[N], *to1[N];
		size_t n0 = 0, n1 = 0;

		for (size_t i = 0; i < N; i++) {
			if (i % 3 == 1)
				to0[n0++] = pg[i];
			else if (i % 3 == 2)
				to1[n1++] = pg[i];
		}
		cr_assert_eq(hmm__pages_move(&g.mem, to0, n0, 0), 0);
		cr_assert_eq(hmm__pages_move(&g.mem, to1, n1, 1), 0);
	}
	/* Device 1 cannot take all 600 pages not already on it... */
	{
		struct hmm__page *not1[N];
		size_t n = 0;
		void *fill[700];

		cr_assert_eq(hmm__pool_alloc_bulk(&g.dev[1]->pool, 500, fill), 0);
		for (size_t i = 0; i < N; i++)
			if (pg[i]->loc != 1)
				not1[n++] = pg[i];
		for (size_t i = 0; i < N; i++)
			before[i] = pg[i]->data;
		cr_assert_eq(hmm__pages_move(&g.mem, not1, n, 1), -ENOSPC);
		for (size_t i = 0; i < N; i++) {
			cr_assert_eq(pg[i]->data, before[i], "page %zu moved on failure", i);
			cr_assert_eq(pg[i]->loc, i % 3 == 0 ? HMM__LOC_HOST : (int)(i % 3) - 1);
		}
		cr_assert_eq(hmm__pool_used(&g.dev[1]->pool), 300 + 500);
		hmm__pool_free_bulk(&g.dev[1]->pool, fill, 500);
		/* ...and now it can: pages from host RAM and device 0 together. */
		cr_assert_eq(hmm__pages_move(&g.mem, not1, n, 1), 0);
	}
	for (size_t i = 0; i < N; i++) {
		cr_assert_eq(pg[i]->loc, 1, "page %zu", i);
		for (size_t o = 0; o < PAGE; o += 97)
			cr_assert_eq(((unsigned char *)pg[i]->data)[o], byte_of(i, o),
				     "page %zu byte %zu", i, o);
	}
	cr_assert_eq(hmm__pool_used(&g.dev[0]->pool), 0);
	cr_assert_eq(hmm__pool_used(&g.host), 0);
	cr_assert_eq(hmm__pool_used(&g.dev[1]->pool), N);
	cr_assert_eq(g.dev[1]->lru_count, N, "every page is on device 1's LRU list");
	cr_assert_eq(g.dev[0]->lru_count, 0);
	cr_assert_eq(g.dev[1]->counters.pages_in, N);
	cr_assert_eq(g.dev[0]->counters.pages_in, 300);
	cr_assert_eq(g.dev[0]->counters.pages_out, 300);
	for (size_t i = 0; i < N; i++)
		hmm__page_free(&g.mem, pg[i]);
	rig_destroy(&g);
}
