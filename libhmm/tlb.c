/* SPDX-License-Identifier: MIT */
/*
 * A compute unit's software TLB: 64 sets x 4 ways of 4 KiB translations
 * and 8 fully associative 2 MiB ones, round-robin replacement, flushed
 * whole when the device's page-table generation moves.  The lookup is
 * inline in pagetable.h; this file has the slow paths.  One thread owns a
 * TLB, so nothing here locks.
 */
#include "config.h"
#include "pagetable.h"

#include <string.h>

void hmm__tlb_init(struct hmm__tlb *t)
{
	memset(t, 0, sizeof(*t));
}

void hmm__tlb_flush_all(struct hmm__tlb *t)
{
	memset(t->small, 0, sizeof(t->small));
	memset(t->large, 0, sizeof(t->large));
	t->flushes++;
}

/* The va range [*lo, *hi] (inclusive) an entry of the given tag and order translates. */
static void entry_span(uint64_t tag, unsigned shift, uint64_t *lo, uint64_t *hi)
{
	*lo = (tag - 1) << shift;
	*hi = *lo + ((1ULL << shift) - 1);
}

/* Empty every entry overlapping [first, last] (inclusive). */
static void drop_overlapping(struct hmm__tlb *t, uint64_t first, uint64_t last)
{
	uint64_t lo, hi;

	for (unsigned s = 0; s < HMM__TLB_SETS; s++) {
		for (unsigned w = 0; w < HMM__TLB_WAYS; w++) {
			struct hmm__tlb_entry *e = &t->small[s][w];

			if (!e->tag)
				continue;
			entry_span(e->tag, HMM__PT_SHIFT, &lo, &hi);
			if (lo <= last && hi >= first)
				e->tag = 0;
		}
	}
	for (unsigned i = 0; i < HMM__TLB_LARGE; i++) {
		struct hmm__tlb_entry *e = &t->large[i];

		if (!e->tag)
			continue;
		entry_span(e->tag, HMM__PT_LARGE_SHIFT, &lo, &hi);
		if (lo <= last && hi >= first)
			e->tag = 0;
	}
}

void hmm__tlb_flush_range(struct hmm__tlb *t, uint64_t start, uint64_t end)
{
	if (start < end)
		drop_overlapping(t, start, end - 1);
}

/* Put tag/pte in one of n entries: an empty one if any, else the round-robin victim. */
static void insert(struct hmm__tlb_entry *set, unsigned n, uint8_t *next, uint64_t tag,
		   uint64_t pte)
{
	unsigned victim = *next;

	for (unsigned i = 0; i < n; i++) {
		if (!set[i].tag) {
			victim = i;
			goto out;
		}
	}
	*next = (uint8_t)((victim + 1) % n);
out:
	set[victim].tag = tag;
	set[victim].pte = pte;
}

/*
 * Empty the entries that translate the 4 KiB page at va: only its own set
 * can hold it, and any of the large entries.
 */
static void drop_page(struct hmm__tlb *t, uint64_t va)
{
	struct hmm__tlb_entry *set = t->small[(va >> HMM__PT_SHIFT) % HMM__TLB_SETS];
	uint64_t tag = (va >> HMM__PT_SHIFT) + 1, ltag = (va >> HMM__PT_LARGE_SHIFT) + 1;

	for (unsigned w = 0; w < HMM__TLB_WAYS; w++)
		if (set[w].tag == tag)
			set[w].tag = 0;
	for (unsigned i = 0; i < HMM__TLB_LARGE; i++)
		if (t->large[i].tag == ltag)
			t->large[i].tag = 0;
}

void hmm__tlb_fill(struct hmm__tlb *t, uint64_t va, uint64_t pte, unsigned order)
{
	unsigned shift = order ? HMM__PT_LARGE_SHIFT : HMM__PT_SHIFT;
	uint64_t base = va >> shift << shift;

	HMM_ASSERT(order == 0 || order == HMM__PT_LARGE_ORDER);
	HMM_ASSERT(va < HMM__VA_LIMIT && (pte & HMM__PTE_VALID));
	/*
	 * Whatever translated any part of this entry's range is older than
	 * it: drop it, so that no va has two translations.
	 */
	if (order) {
		drop_overlapping(t, base, base + (HMM__PT_LARGE_SIZE - 1));
		insert(t->large, HMM__TLB_LARGE, &t->large_next, (va >> shift) + 1, pte);
	} else {
		unsigned s = (va >> HMM__PT_SHIFT) % HMM__TLB_SETS;

		drop_page(t, va);
		insert(t->small[s], HMM__TLB_WAYS, &t->small_next[s], (va >> shift) + 1, pte);
	}
}
