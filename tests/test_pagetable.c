/* SPDX-License-Identifier: MIT */
/*
 * test_pagetable.c - device page tables and TLBs, tested directly against
 * the internal interface (libhmm/pagetable.h): the reference radix format
 * at the edges of the user address space and across every level boundary,
 * against a model under thousands of random maps, unmaps and protects, its
 * footprint going back to empty; the software TLB's fill, flush, large
 * entries, generation check and capacity; and a TLB in front of a page
 * table that a writer thread keeps changing.
 */
#define _GNU_SOURCE
#include "pagetable.h"

#include "rng.h"
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PT (&hmm__pt_radix_ops)
#define PAGE HMM__PT_SIZE
#define LARGE HMM__PT_LARGE_SIZE
#define TOP HMM__VA_LIMIT
#define RW (HMM__PTE_VALID | HMM__PTE_WRITE)


static void *pt_new(void)
{
	void *pt = NULL;

	cr_assert_eq(PT->create(&pt), 0);
	cr_assert_not_null(pt);
	return pt;
}

/* A distinct backing address for va, aligned like va. */
static uint64_t pte_for(uint64_t va, uint64_t salt, uint64_t flags)
{
	return hmm__pte_make(va ^ (salt << 48), flags);
}

/* ------------------------------------------------------------------------
 * Collecting a walk.
 * ------------------------------------------------------------------------ */
struct entry {
	uint64_t va, pte;
	unsigned order;
};

struct entries {
	struct entry *e;
	size_t n, cap;
	size_t stop_after; /* 0: never stop */
};

static int collect(void *arg, uint64_t va, uint64_t pte, unsigned order)
{
	struct entries *l = arg;

	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->e = realloc(l->e, l->cap * sizeof(*l->e));
		cr_assert_not_null(l->e);
	}
	l->e[l->n++] = (struct entry){ va, pte, order };
	if (l->stop_after && l->n == l->stop_after)
		return 42;
	return 0;
}

static bool in_list(const uint64_t *va, size_t n, uint64_t x)
{
	for (size_t i = 0; i < n; i++)
		if (va[i] == x)
			return true;
	return false;
}

static void add_unique(uint64_t *va, size_t *n, size_t max, uint64_t x)
{
	if (*n < max && !in_list(va, *n, x))
		va[(*n)++] = x;
}

/*
 * The two ends of the user address space, and the entries of the given
 * size on both sides of the first few boundaries of every level and of the
 * last level-3 boundary.
 */
static size_t boundary_addresses(uint64_t *va, size_t max, uint64_t size)
{
	static const unsigned shifts[] = { 21, 30, 39 };
	size_t n = 0;

	add_unique(va, &n, max, 0);
	add_unique(va, &n, max, TOP - size);
	for (unsigned s = 0; s < 3; s++) {
		for (uint64_t k = 1; k <= 3; k++) {
			uint64_t b = k << shifts[s];

			add_unique(va, &n, max, b - size);
			add_unique(va, &n, max, b);
		}
	}
	add_unique(va, &n, max, TOP - (1ULL << 39) - size);
	add_unique(va, &n, max, TOP - (1ULL << 39));
	cr_assert_lt(n, max, "room for every address");
	return n;
}

/* ------------------------------------------------------------------------
 * The radix format, directly.
 * ------------------------------------------------------------------------ */
Test(pt_radix, small_entries_round_trip_at_the_ends_and_across_every_level_boundary)
{
	void *pt = pt_new();
	size_t empty = PT->footprint(pt);
	uint64_t va[32];
	size_t n = boundary_addresses(va, 32, PAGE);
	struct entries got = { 0 };
	unsigned order = 99;

	cr_assert_str_eq(PT->name, "radix");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(PT->map(pt, va[i], pte_for(va[i], i + 1, RW), 0), 0,
			     "va %#llx", (unsigned long long)va[i]);
	for (size_t i = 0; i < n; i++) {
		uint64_t pte = PT->lookup(pt, va[i], &order);

		cr_assert_eq(pte, pte_for(va[i], i + 1, RW), "va %#llx: %#llx",
			     (unsigned long long)va[i], (unsigned long long)pte);
		cr_assert_eq(order, 0);
		cr_assert_eq(PT->lookup(pt, va[i] + PAGE - 1, NULL), pte, "the last byte");
		/* The neighbours are holes unless they were mapped themselves. */
		if (va[i] >= PAGE && !in_list(va, n, va[i] - PAGE))
			cr_assert_eq(PT->lookup(pt, va[i] - 1, &order), 0);
		if (va[i] + PAGE < TOP && !in_list(va, n, va[i] + PAGE))
			cr_assert_eq(PT->lookup(pt, va[i] + PAGE, &order), 0);
	}
	cr_assert_gt(PT->footprint(pt), empty);

	cr_assert_eq(PT->walk(pt, 0, UINT64_MAX, collect, &got), 0);
	cr_assert_eq(got.n, n);
	for (size_t i = 0; i < got.n; i++) {
		cr_assert_eq(got.e[i].order, 0);
		if (i)
			cr_assert_gt(got.e[i].va, got.e[i - 1].va, "in address order");
		cr_assert(in_list(va, n, got.e[i].va));
		cr_assert_eq(got.e[i].pte, PT->lookup(pt, got.e[i].va, NULL));
	}

	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(PT->unmap(pt, va[i], va[i] + PAGE), 1, "va %#llx",
			     (unsigned long long)va[i]);
		cr_assert_eq(PT->lookup(pt, va[i], &order), 0);
		cr_assert_eq(PT->unmap(pt, va[i], va[i] + PAGE), 0, "already gone");
	}
	cr_assert_eq(PT->footprint(pt), empty, "every table freed");
	free(got.e);
	PT->destroy(pt);
}

Test(pt_radix, large_entries_serve_all_their_pages_at_the_ends_and_across_boundaries)
{
	void *pt = pt_new();
	size_t empty = PT->footprint(pt);
	uint64_t va[32];
	size_t n = boundary_addresses(va, 32, LARGE);
	unsigned order;

	for (size_t i = 0; i < n; i++)
		cr_assert_eq(PT->map(pt, va[i], pte_for(va[i], i + 1, RW), 9), 0,
			     "va %#llx", (unsigned long long)va[i]);
	for (size_t i = 0; i < n; i++) {
		uint64_t want = pte_for(va[i], i + 1, RW) | HMM__PTE_LARGE;

		for (uint64_t off = 0; off < LARGE; off += PAGE) {
			order = 99;
			cr_assert_eq(PT->lookup(pt, va[i] + off + (off / PAGE) % PAGE, &order), want,
				     "va %#llx + %#llx", (unsigned long long)va[i],
				     (unsigned long long)off);
			cr_assert_eq(order, 9);
		}
		cr_assert_eq(hmm__pte_addr(want), va[i] ^ ((i + 1) << 48));
		cr_assert_eq(hmm__pte_flags(want), RW | HMM__PTE_LARGE);
		if (va[i] >= LARGE && !in_list(va, n, va[i] - LARGE))
			cr_assert_eq(PT->lookup(pt, va[i] - 1, &order), 0);
		if (va[i] + LARGE < TOP && !in_list(va, n, va[i] + LARGE))
			cr_assert_eq(PT->lookup(pt, va[i] + LARGE, &order), 0);
	}
	/* Unmapping one page of a large entry drops all of it. */
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(PT->unmap(pt, va[i] + 5 * PAGE, va[i] + 6 * PAGE), 512);
		cr_assert_eq(PT->lookup(pt, va[i], &order), 0);
		cr_assert_eq(PT->lookup(pt, va[i] + LARGE - 1, &order), 0);
	}
	cr_assert_eq(PT->footprint(pt), empty);
	PT->destroy(pt);
}

Test(pt_radix, map_rejects_bad_arguments_with_einval_and_changes_nothing)
{
	void *pt = pt_new();
	size_t empty = PT->footprint(pt);
	struct {
		uint64_t va, pte;
		unsigned order;
	} bad[] = {
		{ PAGE + 1, hmm__pte_make(0, RW), 0 },            /* va not page aligned */
		{ 1, hmm__pte_make(0, RW), 0 },
		{ PAGE, hmm__pte_make(0, RW), 9 },                /* va not 2 MiB aligned */
		{ LARGE + LARGE / 2, hmm__pte_make(0, RW), 9 },
		{ 0, hmm__pte_make(PAGE, RW), 9 },                /* backing not 2 MiB aligned */
		{ 0, hmm__pte_make(PAGE, RW), 1 },                /* orders other than 0 and 9 */
		{ 0, hmm__pte_make(0, RW), 8 },
		{ 0, hmm__pte_make(0, RW), 10 },
		{ 0, hmm__pte_make(0, RW), 18 },
		{ 0, hmm__pte_make(0, RW), 64 },
		{ TOP, hmm__pte_make(0, RW), 0 },                 /* at or above 2^47 */
		{ TOP, hmm__pte_make(0, RW), 9 },
		{ TOP + PAGE, hmm__pte_make(0, RW), 0 },
		{ 1ULL << 48, hmm__pte_make(0, RW), 0 },
		{ UINT64_MAX & ~(LARGE - 1), hmm__pte_make(0, RW), 9 },
		{ PAGE, hmm__pte_make(PAGE, HMM__PTE_WRITE), 0 }, /* not VALID */
		{ PAGE, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(PT->map(pt, bad[i].va, bad[i].pte, bad[i].order), -EINVAL,
			     "case %zu", i);
		cr_assert_eq(PT->footprint(pt), empty, "case %zu", i);
		cr_assert_eq(PT->lookup(pt, bad[i].va, NULL), 0, "case %zu", i);
	}
	cr_assert_eq(PT->lookup(pt, TOP, NULL), 0);
	cr_assert_eq(PT->lookup(pt, UINT64_MAX, NULL), 0);
	/* The last valid page and 2 MiB entry are accepted. */
	cr_assert_eq(PT->map(pt, TOP - PAGE, hmm__pte_make(0, RW), 0), 0);
	cr_assert_eq(PT->map(pt, TOP - 2 * LARGE, hmm__pte_make(0, RW), 9), 0);
	/* A range reaching past 2^47 is cut there. */
	cr_assert_eq(PT->unmap(pt, TOP - LARGE, UINT64_MAX), 1);
	cr_assert_eq(PT->unmap(pt, TOP, UINT64_MAX), 0);
	cr_assert_eq(PT->unmap(pt, 5, 5), 0, "an empty range");
	cr_assert_eq(PT->unmap(pt, 0, UINT64_MAX), 512);
	cr_assert_eq(PT->footprint(pt), empty);
	PT->destroy(pt);
}

Test(pt_radix, the_format_sets_large_on_order_9_and_clears_it_on_order_0)
{
	void *pt = pt_new();
	uint64_t flags = RW | HMM__PTE_DEVICE | HMM__PTE_EXCLUSIVE | (1u << 7);
	unsigned order;

	cr_assert_eq(PT->map(pt, 0, hmm__pte_make(LARGE, flags), 9), 0);
	cr_assert_eq(PT->lookup(pt, 0, &order), hmm__pte_make(LARGE, flags | HMM__PTE_LARGE));
	cr_assert_eq(PT->map(pt, 4 * LARGE, hmm__pte_make(PAGE, flags | HMM__PTE_LARGE), 0), 0);
	cr_assert_eq(PT->lookup(pt, 4 * LARGE, &order), hmm__pte_make(PAGE, flags));
	cr_assert_eq(order, 0);
	PT->destroy(pt);
}

Test(pt_radix, a_small_entry_inside_a_large_one_drops_the_large_one_whole)
{
	void *pt = pt_new();
	uint64_t base = 7 * LARGE;
	unsigned order;

	cr_assert_eq(PT->map(pt, base, hmm__pte_make(1ULL << 40, RW), 9), 0);
	cr_assert_eq(PT->map(pt, base + 3 * PAGE, hmm__pte_make(5 * PAGE, RW), 0), 0);
	cr_assert_eq(PT->lookup(pt, base + 3 * PAGE, &order), hmm__pte_make(5 * PAGE, RW));
	cr_assert_eq(order, 0);
	for (uint64_t off = 0; off < LARGE; off += PAGE)
		if (off != 3 * PAGE)
			cr_assert_eq(PT->lookup(pt, base + off, &order), 0, "offset %#llx",
				     (unsigned long long)off);
	cr_assert_eq(PT->unmap(pt, 0, UINT64_MAX), 1);
	PT->destroy(pt);
}

Test(pt_radix, a_large_entry_over_small_ones_frees_their_leaf_table)
{
	void *pt = pt_new();
	size_t empty = PT->footprint(pt), with_leaf, without_leaf;
	uint64_t base = (1ULL << 39) + 3 * LARGE;
	struct entries got = { 0 };

	for (uint64_t off = 0; off < LARGE; off += 16 * PAGE)
		cr_assert_eq(PT->map(pt, base + off, hmm__pte_make(off, RW), 0), 0);
	with_leaf = PT->footprint(pt);
	cr_assert_eq(PT->map(pt, base, hmm__pte_make(LARGE, RW), 9), 0);
	without_leaf = PT->footprint(pt);
	cr_assert_lt(without_leaf, with_leaf, "the leaf table was freed");
	cr_assert_gt(without_leaf, empty);
	/* Mapping it back in needs exactly one table again. */
	cr_assert_eq(PT->map(pt, base + PAGE, hmm__pte_make(0, RW), 0), 0);
	cr_assert_eq(PT->footprint(pt), with_leaf);
	cr_assert_eq(PT->map(pt, base, hmm__pte_make(LARGE, RW), 9), 0);
	cr_assert_eq(PT->footprint(pt), without_leaf);
	cr_assert_eq(PT->walk(pt, 0, UINT64_MAX, collect, &got), 0);
	cr_assert_eq(got.n, 1, "only the large entry is left: %zu", got.n);
	cr_assert_eq(got.e[0].va, base);
	cr_assert_eq(got.e[0].order, 9);
	cr_assert_eq(PT->unmap(pt, base, base + 1), 512);
	cr_assert_eq(PT->footprint(pt), empty);
	free(got.e);
	PT->destroy(pt);
}

Test(pt_radix, footprint_returns_to_empty_after_unmapping_everything)
{
	void *pt = pt_new();
	size_t empty = PT->footprint(pt), peak;
	uint64_t pages = 0;

	rng_state = 77;
	for (int i = 0; i < 3000; i++) {
		uint64_t va = rng() % TOP;

		if (i % 4 == 0) {
			va &= ~(LARGE - 1);
			cr_assert_eq(PT->map(pt, va, hmm__pte_make(0, RW), 9), 0);
		} else {
			va &= ~(PAGE - 1);
			cr_assert_eq(PT->map(pt, va, hmm__pte_make(0, RW), 0), 0);
		}
	}
	peak = PT->footprint(pt);
	cr_assert_gt(peak, empty + 1000 * 4096, "thousands of tables: %zu", peak);
	/* Unmap in pieces of random size, then the rest. */
	for (uint64_t at = 0; at < TOP;) {
		uint64_t len = 1 + rng() % (1ULL << 36);

		pages += PT->unmap(pt, at, at + len);
		at += len;
	}
	pages += PT->unmap(pt, 0, UINT64_MAX);
	cr_assert_geq(pages, 3000, "every entry counted once: %llu", (unsigned long long)pages);
	cr_assert_eq(PT->footprint(pt), empty);
	cr_assert_eq(PT->walk(pt, 0, UINT64_MAX, collect, &(struct entries){ 0 }), 0);
	PT->destroy(pt);
}

Test(pt_radix, protect_clears_flags_and_drops_a_large_entry_partly_inside)
{
	void *pt = pt_new();
	uint64_t all = RW | HMM__PTE_EXCLUSIVE | HMM__PTE_DEVICE;
	unsigned order;

	/* Small entries at 0..7, large ones at [2, 3) MiB... [4, 6) MiB. */
	for (uint64_t i = 0; i < 8; i++)
		cr_assert_eq(PT->map(pt, i * PAGE, hmm__pte_make(i * PAGE, all), 0), 0);
	for (uint64_t i = 1; i < 3; i++)
		cr_assert_eq(PT->map(pt, i * LARGE, hmm__pte_make(i * LARGE, all), 9), 0);

	/* Pages 2..4, the last one only in part; VALID in clear is ignored. */
	PT->protect(pt, 2 * PAGE + 100, 4 * PAGE + 1,
		    HMM__PTE_WRITE | HMM__PTE_EXCLUSIVE | HMM__PTE_VALID);
	for (uint64_t i = 0; i < 8; i++) {
		uint64_t want = i >= 2 && i <= 4 ? HMM__PTE_VALID | HMM__PTE_DEVICE : all;

		cr_assert_eq(PT->lookup(pt, i * PAGE, &order), hmm__pte_make(i * PAGE, want),
			     "page %llu", (unsigned long long)i);
	}
	/* The first large entry is inside whole, the second only in part. */
	PT->protect(pt, LARGE, 2 * LARGE + PAGE, HMM__PTE_WRITE);
	cr_assert_eq(PT->lookup(pt, LARGE + 9 * PAGE, &order),
		     hmm__pte_make(LARGE, (all & ~HMM__PTE_WRITE) | HMM__PTE_LARGE));
	cr_assert_eq(order, 9);
	cr_assert_eq(PT->lookup(pt, 2 * LARGE + 9 * PAGE, &order), 0);
	cr_assert_eq(PT->unmap(pt, 0, UINT64_MAX), 8 + 512);
	PT->destroy(pt);
}

Test(pt_radix, walk_reports_overlapping_entries_in_order_and_stops_on_nonzero)
{
	void *pt = pt_new();
	struct entries got = { 0 };

	cr_assert_eq(PT->map(pt, LARGE, hmm__pte_make(0, RW), 9), 0);
	cr_assert_eq(PT->map(pt, 2 * LARGE + PAGE, hmm__pte_make(PAGE, RW), 0), 0);
	cr_assert_eq(PT->map(pt, 1ULL << 40, hmm__pte_make(2 * PAGE, RW), 0), 0);
	cr_assert_eq(PT->map(pt, 1ULL << 42, hmm__pte_make(LARGE, RW), 9), 0);

	/* A range starting inside the large entry still reports it, at its own va. */
	cr_assert_eq(PT->walk(pt, LARGE + 5 * PAGE, 2 * LARGE + PAGE + 1, collect, &got), 0);
	cr_assert_eq(got.n, 2);
	cr_assert_eq(got.e[0].va, LARGE);
	cr_assert_eq(got.e[0].order, 9);
	cr_assert_eq(got.e[1].va, 2 * LARGE + PAGE);
	cr_assert_eq(got.e[1].pte, hmm__pte_make(PAGE, RW));
	got.n = 0;
	cr_assert_eq(PT->walk(pt, 2 * LARGE + 2 * PAGE, 1ULL << 40, collect, &got), 0);
	cr_assert_eq(got.n, 0, "end is exclusive");
	got.stop_after = 3;
	cr_assert_eq(PT->walk(pt, 0, UINT64_MAX, collect, &got), 42);
	cr_assert_eq(got.n, 3, "stopped after the third");
	cr_assert_eq(got.e[2].va, 1ULL << 40);
	free(got.e);
	PT->destroy(pt);
}

/* ------------------------------------------------------------------------
 * The radix format against a model: every 4 KiB page of a 4 GiB window
 * that straddles a level-3 boundary (2^39), with a hot 8 MiB around it.
 * ------------------------------------------------------------------------ */
#define WIN_BASE ((1ULL << 39) - (2ULL << 30))
#define WIN_PAGES (1ULL << 20)
#define HOT_BASE ((1ULL << 39) - (4ULL << 20))
#define HOT_SIZE (8ULL << 20)

struct model {
	uint64_t *pte;    /* per page; a large entry's pte on each of its 512 */
	uint8_t *order;
};

static uint64_t mpage(uint64_t va)
{
	return (va - WIN_BASE) / PAGE;
}

static void model_set_large(struct model *m, uint64_t first, uint64_t pte)
{
	for (uint64_t p = first; p < first + 512; p++) {
		m->pte[p] = pte;
		m->order[p] = pte ? 9 : 0;
	}
}

static void model_map(struct model *m, uint64_t va, uint64_t pte, unsigned order)
{
	uint64_t p = mpage(va);

	if (order) {
		model_set_large(m, p, pte | HMM__PTE_LARGE);
		return;
	}
	if (m->order[p] == 9)
		model_set_large(m, p & ~511ULL, 0);
	m->pte[p] = pte & ~HMM__PTE_LARGE;
	m->order[p] = 0;
}

/* Unmap (clear == 0) or protect [start, end) in the model; return pages dropped. */
static uint64_t model_range(struct model *m, uint64_t start, uint64_t end, bool unmap,
			    uint64_t clear)
{
	uint64_t dropped = 0;

	clear &= HMM__PTE_FLAGS_MASK & ~(HMM__PTE_VALID | HMM__PTE_LARGE);
	for (uint64_t p = mpage(start); p <= mpage(end - 1); p++) {
		if (!m->pte[p])
			continue;
		if (m->order[p] == 9) {
			uint64_t first = p & ~511ULL;
			uint64_t lo = WIN_BASE + first * PAGE;
			bool whole = lo >= start && lo + LARGE <= end;

			if (unmap || !whole) {
				model_set_large(m, first, 0);
				dropped += 512;
			} else {
				model_set_large(m, first, m->pte[p] & ~clear);
			}
			p = first + 511;
		} else if (unmap) {
			m->pte[p] = 0;
			dropped++;
		} else {
			m->pte[p] &= ~clear;
		}
	}
	return dropped;
}

/* The entries the model says a walk of [start, end) reports. */
static void model_walk(const struct model *m, uint64_t start, uint64_t end, struct entries *l)
{
	for (uint64_t p = mpage(start); p <= mpage(end - 1); p++) {
		if (!m->pte[p])
			continue;
		if (m->order[p] == 9) {
			p &= ~511ULL;
			collect(l, WIN_BASE + p * PAGE, m->pte[p], 9);
			p += 511;
		} else {
			collect(l, WIN_BASE + p * PAGE, m->pte[p], 0);
		}
	}
}

static void expect_walk_matches(void *pt, const struct model *m, uint64_t start, uint64_t end)
{
	struct entries got = { 0 }, want = { 0 };

	cr_assert_eq(PT->walk(pt, start, end, collect, &got), 0);
	model_walk(m, start, end, &want);
	cr_assert_eq(got.n, want.n, "walk [%#llx, %#llx): %zu entries, the model has %zu",
		     (unsigned long long)start, (unsigned long long)end, got.n, want.n);
	for (size_t i = 0; i < got.n; i++) {
		cr_assert_eq(got.e[i].va, want.e[i].va, "entry %zu", i);
		cr_assert_eq(got.e[i].pte, want.e[i].pte, "entry %zu at %#llx", i,
			     (unsigned long long)got.e[i].va);
		cr_assert_eq(got.e[i].order, want.e[i].order, "entry %zu", i);
	}
	free(got.e);
	free(want.e);
}

static void expect_lookups_match(void *pt, const struct model *m, uint64_t first, uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++) {
		uint64_t va = WIN_BASE + p * PAGE + (p * 97) % PAGE;
		unsigned order = 99;
		uint64_t pte = PT->lookup(pt, va, &order);

		cr_assert_eq(pte, m->pte[p], "va %#llx: %#llx, the model says %#llx",
			     (unsigned long long)va, (unsigned long long)pte,
			     (unsigned long long)m->pte[p]);
		if (pte)
			cr_assert_eq(order, m->order[p], "va %#llx", (unsigned long long)va);
	}
}

/* A random va in the window: half the time in the hot region. */
static uint64_t random_va(void)
{
	if (rng() % 2)
		return HOT_BASE + rng() % HOT_SIZE;
	return WIN_BASE + rng() % (WIN_PAGES * PAGE);
}

/* A random non-empty range inside the window, usually small. */
static void random_range(uint64_t *start, uint64_t *end)
{
	uint64_t win_end = WIN_BASE + WIN_PAGES * PAGE, len;
	unsigned kind = rng() % 20;

	*start = random_va();
	if (kind < 14)
		len = 1 + rng() % (16 * PAGE);
	else if (kind < 19)
		len = 1 + rng() % (4 * LARGE);
	else
		len = 1 + rng() % (512ULL << 20);
	*end = *start + len > win_end ? win_end : *start + len;
}

static uint64_t random_pte(unsigned order)
{
	uint64_t flags = HMM__PTE_VALID | (rng() & 0xfee); /* sometimes LARGE, other bits */

	return hmm__pte_make((rng() % (1ULL << 30)) << (12 + order), flags);
}

ParameterizedTestParameters(pt_radix, random_operations_agree_with_a_model)
{
	static unsigned seeds[] = { 1, 2, 3, 4, 0xdecade };

	return cr_make_param_array(unsigned, seeds, sizeof(seeds) / sizeof(seeds[0]));
}

ParameterizedTest(unsigned *seed, pt_radix, random_operations_agree_with_a_model)
{
	struct model m = {
		.pte = calloc(WIN_PAGES, sizeof(uint64_t)),
		.order = calloc(WIN_PAGES, 1),
	};
	void *pt = pt_new();
	size_t empty = PT->footprint(pt);
	uint64_t present = 0;

	cr_assert(m.pte && m.order);
	rng_state = *seed * 0x9E3779B97F4A7C15ull;
	for (int i = 1; i <= 20000; i++) {
		unsigned kind = rng() % 20;
		uint64_t start, end;

		if (kind < 7) {
			uint64_t va = random_va() & ~(PAGE - 1), pte = random_pte(0);

			cr_assert_eq(PT->map(pt, va, pte, 0), 0);
			model_map(&m, va, pte, 0);
		} else if (kind < 10) {
			uint64_t va = random_va() & ~(LARGE - 1), pte = random_pte(9);

			cr_assert_eq(PT->map(pt, va, pte, 9), 0);
			model_map(&m, va, pte, 9);
		} else if (kind < 15) {
			random_range(&start, &end);
			uint64_t want = model_range(&m, start, end, true, 0);
			uint64_t got = PT->unmap(pt, start, end);

			cr_assert_eq(got, want, "op %d: unmap [%#llx, %#llx) dropped %llu, the model %llu",
				     i, (unsigned long long)start, (unsigned long long)end,
				     (unsigned long long)got, (unsigned long long)want);
		} else {
			uint64_t clear = rng() & (HMM__PTE_VALID | HMM__PTE_WRITE |
						  HMM__PTE_DEVICE | HMM__PTE_EXCLUSIVE | 0x80);

			random_range(&start, &end);
			model_range(&m, start, end, false, clear);
			PT->protect(pt, start, end, clear);
		}
		if (i % 5000 == 0) {
			expect_lookups_match(pt, &m, mpage(HOT_BASE), HOT_SIZE / PAGE);
			random_range(&start, &end);
			expect_walk_matches(pt, &m, start, end);
		}
	}
	expect_lookups_match(pt, &m, 0, WIN_PAGES);
	expect_walk_matches(pt, &m, WIN_BASE, WIN_BASE + WIN_PAGES * PAGE);
	/* Nothing outside the window: the whole space has as many entries. */
	{
		struct entries all = { 0 }, win = { 0 };

		PT->walk(pt, 0, UINT64_MAX, collect, &all);
		model_walk(&m, WIN_BASE, WIN_BASE + WIN_PAGES * PAGE, &win);
		cr_assert_eq(all.n, win.n);
		free(all.e);
		free(win.e);
	}
	for (uint64_t p = 0; p < WIN_PAGES; p++)
		present += m.pte[p] != 0;
	cr_assert_gt(present, 0);
	cr_assert_eq(PT->unmap(pt, 0, UINT64_MAX), present);
	cr_assert_eq(PT->footprint(pt), empty);
	PT->destroy(pt);
	free(m.pte);
	free(m.order);
}

/* ------------------------------------------------------------------------
 * The TLB.
 * ------------------------------------------------------------------------ */
static struct hmm__tlb *tlb_new(void)
{
	struct hmm__tlb *t = malloc(sizeof(*t));

	cr_assert_not_null(t);
	hmm__tlb_init(t);
	return t;
}

Test(tlb, hits_after_fill_with_the_translation_that_was_filled)
{
	struct hmm__tlb *t = tlb_new();
	uint64_t gen = 0, pte = 0;
	unsigned order = 99;

	cr_assert_not(hmm__tlb_lookup(t, &gen, 5 * PAGE, &pte, &order));
	cr_assert_eq(t->misses, 1);
	hmm__tlb_fill(t, 5 * PAGE + 17, hmm__pte_make(9 * PAGE, RW), 0);
	cr_assert(hmm__tlb_lookup(t, &gen, 5 * PAGE, &pte, &order));
	cr_assert_eq(pte, hmm__pte_make(9 * PAGE, RW));
	cr_assert_eq(order, 0);
	cr_assert(hmm__tlb_lookup(t, &gen, 6 * PAGE - 1, &pte, &order), "the whole page");
	cr_assert_not(hmm__tlb_lookup(t, &gen, 6 * PAGE, &pte, &order), "not the next");
	cr_assert_not(hmm__tlb_lookup(t, &gen, 5 * PAGE + 64 * PAGE, &pte, &order),
		      "not another page of the same set");
	cr_assert_eq(t->hits, 2);
	cr_assert_eq(t->misses, 3);
	/* Filling the same page again replaces the translation. */
	hmm__tlb_fill(t, 5 * PAGE, hmm__pte_make(11 * PAGE, RW), 0);
	cr_assert(hmm__tlb_lookup(t, &gen, 5 * PAGE, &pte, &order));
	cr_assert_eq(pte, hmm__pte_make(11 * PAGE, RW));
	/* The top user page works like any other. */
	hmm__tlb_fill(t, TOP - PAGE, hmm__pte_make(PAGE, RW), 0);
	cr_assert(hmm__tlb_lookup(t, &gen, TOP - 1, &pte, &order));
	cr_assert_eq(pte, hmm__pte_make(PAGE, RW));
	cr_assert_not(hmm__tlb_lookup(t, &gen, TOP, &pte, &order));
	free(t);
}

Test(tlb, flush_range_drops_the_entries_it_overlaps_and_only_those)
{
	struct hmm__tlb *t = tlb_new();
	uint64_t gen = 0, pte;
	unsigned order;

	for (uint64_t i = 0; i < 16; i++)
		hmm__tlb_fill(t, i * PAGE, hmm__pte_make(i * PAGE, RW), 0);
	hmm__tlb_fill(t, 4 * LARGE, hmm__pte_make(LARGE, RW), 9);
	hmm__tlb_fill(t, 5 * LARGE, hmm__pte_make(2 * LARGE, RW), 9);
	/* Pages 3..5 (the last one by its first byte) and the first large entry, by one byte. */
	hmm__tlb_flush_range(t, 3 * PAGE + 1, 5 * PAGE + 1);
	hmm__tlb_flush_range(t, 5 * LARGE - 1, 5 * LARGE);
	for (uint64_t i = 0; i < 16; i++) {
		bool hit = hmm__tlb_lookup(t, &gen, i * PAGE, &pte, &order);

		cr_assert_eq(hit, i < 3 || i > 5, "page %llu", (unsigned long long)i);
		if (hit)
			cr_assert_eq(pte, hmm__pte_make(i * PAGE, RW));
	}
	cr_assert_not(hmm__tlb_lookup(t, &gen, 4 * LARGE + 3 * PAGE, &pte, &order));
	cr_assert(hmm__tlb_lookup(t, &gen, 5 * LARGE + 3 * PAGE, &pte, &order));
	cr_assert_eq(pte, hmm__pte_make(2 * LARGE, RW) );
	hmm__tlb_flush_range(t, 0, 0);
	cr_assert(hmm__tlb_lookup(t, &gen, 0, &pte, &order), "an empty range flushes nothing");
	cr_assert_eq(t->flushes, 0, "a range flush is not a full one");
	free(t);
}

Test(tlb, a_large_entry_serves_every_page_inside_it)
{
	struct hmm__tlb *t = tlb_new();
	uint64_t gen = 0, pte, base = (1ULL << 30) - LARGE;
	uint64_t large = hmm__pte_make(LARGE, RW | HMM__PTE_LARGE);
	unsigned order;

	hmm__tlb_fill(t, base + 77 * PAGE + 5, large, 9);
	for (uint64_t off = 0; off < LARGE; off += PAGE) {
		order = 99;
		cr_assert(hmm__tlb_lookup(t, &gen, base + off + off / PAGE, &pte, &order),
			  "offset %#llx", (unsigned long long)off);
		cr_assert_eq(pte, large);
		cr_assert_eq(order, 9);
	}
	cr_assert_not(hmm__tlb_lookup(t, &gen, base - 1, &pte, &order));
	cr_assert_not(hmm__tlb_lookup(t, &gen, base + LARGE, &pte, &order));
	/* A small fill inside it replaces it; a large fill over small ones replaces them. */
	hmm__tlb_fill(t, base + PAGE, hmm__pte_make(3 * PAGE, RW), 0);
	cr_assert(hmm__tlb_lookup(t, &gen, base + PAGE, &pte, &order));
	cr_assert_eq(pte, hmm__pte_make(3 * PAGE, RW));
	cr_assert_eq(order, 0);
	cr_assert_not(hmm__tlb_lookup(t, &gen, base, &pte, &order));
	hmm__tlb_fill(t, base, large, 9);
	cr_assert(hmm__tlb_lookup(t, &gen, base + PAGE, &pte, &order));
	cr_assert_eq(pte, large);
	cr_assert_eq(order, 9);
	free(t);
}

Test(tlb, a_generation_change_flushes_everything_once)
{
	struct hmm__tlb *t = tlb_new();
	uint64_t gen = 0, pte;
	unsigned order;

	hmm__tlb_fill(t, 0, hmm__pte_make(PAGE, RW), 0);
	hmm__tlb_fill(t, LARGE, hmm__pte_make(LARGE, RW | HMM__PTE_LARGE), 9);
	cr_assert(hmm__tlb_lookup(t, &gen, 0, &pte, &order));
	cr_assert_eq(hmm__tlb_gen_bump(&gen), 1);
	cr_assert_not(hmm__tlb_lookup(t, &gen, 0, &pte, &order), "flushed");
	cr_assert_eq(t->gen, 1, "adopted");
	cr_assert_eq(t->flushes, 1);
	cr_assert_not(hmm__tlb_lookup(t, &gen, LARGE, &pte, &order), "large ones too");
	cr_assert_eq(t->flushes, 1, "once per change");
	hmm__tlb_fill(t, 0, hmm__pte_make(2 * PAGE, RW), 0);
	cr_assert(hmm__tlb_lookup(t, &gen, 0, &pte, &order), "refilled at the new generation");
	cr_assert_eq(pte, hmm__pte_make(2 * PAGE, RW));
	hmm__tlb_flush_all(t);
	cr_assert_eq(t->flushes, 2);
	cr_assert_not(hmm__tlb_lookup(t, &gen, 0, &pte, &order));
	free(t);
}

Test(tlb, overfilling_it_gives_misses_never_wrong_answers)
{
	struct hmm__tlb *t = tlb_new();
	uint64_t gen = 0, pte, hits = 0;
	unsigned order;

	/* Ten times what it holds, small and large mixed, some filled twice. */
	for (int round = 0; round < 2; round++) {
		for (uint64_t i = 0; i < 2560; i++)
			hmm__tlb_fill(t, i * PAGE, hmm__pte_make((i + round) * PAGE, RW), 0);
		for (uint64_t i = 0; i < 80; i++)
			hmm__tlb_fill(t, (1ULL << 40) + i * LARGE,
				      hmm__pte_make((i + round) * LARGE, RW | HMM__PTE_LARGE), 9);
	}
	for (uint64_t i = 0; i < 2560; i++) {
		if (hmm__tlb_lookup(t, &gen, i * PAGE, &pte, &order)) {
			cr_assert_eq(pte, hmm__pte_make((i + 1) * PAGE, RW), "page %llu",
				     (unsigned long long)i);
			cr_assert_eq(order, 0);
			hits++;
		}
	}
	cr_assert_eq(hits, HMM__TLB_SETS * HMM__TLB_WAYS, "the last ones filled stay: %llu",
		     (unsigned long long)hits);
	hits = 0;
	for (uint64_t i = 0; i < 80; i++) {
		if (hmm__tlb_lookup(t, &gen, (1ULL << 40) + i * LARGE + 5 * PAGE, &pte, &order)) {
			cr_assert_eq(pte, hmm__pte_make((i + 1) * LARGE, RW | HMM__PTE_LARGE));
			cr_assert_eq(order, 9);
			hits++;
		}
	}
	cr_assert_eq(hits, HMM__TLB_LARGE);
	free(t);
}

/* ------------------------------------------------------------------------
 * A TLB in front of a page table that a writer keeps changing.
 *
 * The writer remaps one of NPAGES pages at a time to a new version of its
 * backing address, then bumps the generation, all under the table's lock;
 * version_at[g][i] is page i's version at generation g.  A reader that has
 * seen generation g must never translate page i to a version older than
 * version_at[g][i], nor to one newer than the generation after the access.
 *
 * The threads go in loose lockstep, so that the writes are spread over the
 * reads whatever the scheduler does: the writer makes write g once every
 * reader has made READS_PER_WRITE * (g - 1) reads, and a reader makes read
 * n once the writer has made n / READS_PER_WRITE - 1 writes.  Neither
 * waits for the other to be exactly anywhere, so both always progress.
 * ------------------------------------------------------------------------ */
#define NPAGES 64
#define NREADERS 3
#define WRITES 3000
#define READS_PER_WRITE 10
#define READS (WRITES * READS_PER_WRITE + 5000)

struct shared {
	void *pt;
	pthread_mutex_t lock;
	pthread_barrier_t start;
	uint64_t gen;                       /* bumped with release; read with acquire */
	uint32_t (*version_at)[NPAGES];     /* row g written before gen becomes g */
	uint64_t reads[NREADERS];           /* each reader's progress; atomic */
};

struct reader {
	struct shared *s;
	unsigned index;
	unsigned seed;
	uint64_t hits, misses, bad;
	char why[200];
};

static uint64_t page_va(unsigned i)
{
	/* 64 pages straddling the 1 GiB boundary: two leaf tables, two level-1 tables. */
	return (1ULL << 30) - 32 * PAGE + i * PAGE;
}

static uint64_t versioned_pte(unsigned i, uint32_t version)
{
	return hmm__pte_make(((uint64_t)version * NPAGES + i) << 12, RW);
}

static void *writer_main(void *arg)
{
	struct shared *s = arg;
	uint32_t version[NPAGES];
	uint64_t state = 12345;

	for (unsigned i = 0; i < NPAGES; i++)
		version[i] = 1;
	pthread_barrier_wait(&s->start);
	for (unsigned g = 1; g <= WRITES; g++) {
		unsigned i;

		state ^= state << 13;
		state ^= state >> 7;
		state ^= state << 17;
		i = state % NPAGES;
		for (unsigned k = 0; k < NREADERS; k++)
			while (__atomic_load_n(&s->reads[k], __ATOMIC_RELAXED) <
			       (uint64_t)READS_PER_WRITE * (g - 1))
				sched_yield();
		pthread_mutex_lock(&s->lock);
		PT->unmap(s->pt, page_va(i), page_va(i) + PAGE);
		PT->map(s->pt, page_va(i), versioned_pte(i, ++version[i]), 0);
		memcpy(s->version_at[g], s->version_at[g - 1], sizeof(s->version_at[g]));
		s->version_at[g][i] = version[i];
		hmm__tlb_gen_bump(&s->gen);
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct shared *s = r->s;
	struct hmm__tlb tlb;
	uint64_t state = r->seed;

	hmm__tlb_init(&tlb);
	pthread_barrier_wait(&s->start);
	for (unsigned n = 0; n < READS; n++) {
		uint64_t g, g_after, pte = 0, va;
		unsigned i, order = 0;
		uint32_t v;

		state ^= state << 13;
		state ^= state >> 7;
		state ^= state << 17;
		i = state % NPAGES;
		va = page_va(i) + (state >> 32) % PAGE;
		__atomic_store_n(&s->reads[r->index], n, __ATOMIC_RELAXED);
		while (__atomic_load_n(&s->gen, __ATOMIC_RELAXED) + 1 < n / READS_PER_WRITE &&
		       n / READS_PER_WRITE <= WRITES)
			sched_yield();
		g = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
		if (hmm__tlb_lookup(&tlb, &s->gen, va, &pte, &order)) {
			r->hits++;
		} else {
			r->misses++;
			pthread_mutex_lock(&s->lock);
			pte = PT->lookup(s->pt, va, &order);
			if (pte)
				hmm__tlb_fill(&tlb, va, pte, order);
			pthread_mutex_unlock(&s->lock);
		}
		g_after = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
		v = (uint32_t)(hmm__pte_addr(pte) >> 12) / NPAGES;
		if (!pte || order != 0 || (hmm__pte_addr(pte) >> 12) % NPAGES != i ||
		    v < s->version_at[g][i] || v > s->version_at[g_after][i]) {
			if (!r->bad++)
				snprintf(r->why, sizeof(r->why),
					 "page %u at generation %llu..%llu: pte %#llx (version %u),"
					 " versions %u..%u", i, (unsigned long long)g,
					 (unsigned long long)g_after, (unsigned long long)pte, v,
					 s->version_at[g][i], s->version_at[g_after][i]);
		}
	}
	__atomic_store_n(&s->reads[r->index], READS, __ATOMIC_RELAXED);
	return NULL;
}

Test(tlb, readers_never_see_a_translation_older_than_the_generation_they_saw, .timeout = 120)
{
	struct shared s = { .pt = pt_new() };
	struct reader r[NREADERS];
	pthread_t writer, readers[NREADERS];
	uint64_t hits = 0, misses = 0;

	s.version_at = calloc(WRITES + 1, sizeof(*s.version_at));
	cr_assert_not_null(s.version_at);
	pthread_mutex_init(&s.lock, NULL);
	pthread_barrier_init(&s.start, NULL, NREADERS + 1);
	for (unsigned i = 0; i < NPAGES; i++) {
		cr_assert_eq(PT->map(s.pt, page_va(i), versioned_pte(i, 1), 0), 0);
		s.version_at[0][i] = 1;
	}
	cr_assert_eq(pthread_create(&writer, NULL, writer_main, &s), 0);
	for (unsigned k = 0; k < NREADERS; k++) {
		r[k] = (struct reader){ .s = &s, .index = k, .seed = 1000 + k };
		cr_assert_eq(pthread_create(&readers[k], NULL, reader_main, &r[k]), 0);
	}
	pthread_join(writer, NULL);
	for (unsigned k = 0; k < NREADERS; k++) {
		pthread_join(readers[k], NULL);
		cr_assert_eq(r[k].bad, 0, "reader %u: %llu bad translations, the first: %s", k,
			     (unsigned long long)r[k].bad, r[k].why);
		hits += r[k].hits;
		misses += r[k].misses;
	}
	cr_assert_eq(s.gen, WRITES);
	cr_assert_gt(hits, 0, "the TLBs were used");
	cr_assert_gt(misses, 0);
	PT->destroy(s.pt);
	pthread_barrier_destroy(&s.start);
	pthread_mutex_destroy(&s.lock);
	free(s.version_at);
}
