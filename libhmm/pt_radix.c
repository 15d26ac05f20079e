/* SPDX-License-Identifier: MIT */
/*
 * The reference device page-table format: a 4-level radix tree of 512-entry
 * tables, like x86-64's.  A va splits into four 9-bit indices (bits 47..39,
 * 38..30, 29..21, 20..12) and a 12-bit offset.
 *
 *   level 3 (the root, embedded in struct pt)  -> level-2 tables
 *   level 2                                    -> level-1 tables
 *   level 1 (the "PMD" level)                  -> a level-0 table, or a 2 MiB PTE
 *   level 0 (the leaves)                       -> 4 KiB PTEs
 *
 * A slot of levels 3..1 holding a table holds its address, which has bit 0
 * clear (malloc alignment); a PTE always has HMM__PTE_VALID (bit 0) set.  So
 * a level-1 slot is a large PTE iff its VALID bit is set; large PTEs also
 * carry HMM__PTE_LARGE, which is asserted.  A lookup is then at most four
 * dependent loads, one per level.
 *
 * Invariants: every table but the root has count == its non-zero slots > 0
 * (a table that becomes empty is freed at once), and
 * footprint == sizeof(struct pt) + ntables * sizeof(struct pt_table).
 */
#include "config.h"
#include "pagetable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PT_BITS 9
#define PT_SLOTS (1u << PT_BITS)
#define PT_LEVELS 4

struct pt_table {
	uint64_t slot[PT_SLOTS];
	unsigned count; /* non-zero slots */
};

struct pt {
	struct pt_table root; /* level 3; never freed, so its count may be 0 */
	size_t ntables;       /* tables below the root */
};

/* The shift of the va bits that index a table of this level. */
static unsigned level_shift(unsigned level)
{
	return HMM__PT_SHIFT + level * PT_BITS;
}

static unsigned level_index(uint64_t va, unsigned level)
{
	return (va >> level_shift(level)) & (PT_SLOTS - 1);
}

static bool slot_is_pte(uint64_t slot)
{
	return slot & HMM__PTE_VALID;
}

static struct pt_table *slot_table(uint64_t slot)
{
	HMM_ASSERT(slot && !slot_is_pte(slot));
	return (struct pt_table *)(uintptr_t)slot;
}

static uint64_t table_slot(struct pt_table *t)
{
	uint64_t slot = (uint64_t)(uintptr_t)t;

	HMM_ASSERT(!slot_is_pte(slot));
	return slot;
}

static void free_table(struct pt *pt, struct pt_table *t, unsigned level)
{
	for (unsigned i = 0; level > 0 && t->count && i < PT_SLOTS; i++) {
		uint64_t s = t->slot[i];

		if (s && !slot_is_pte(s))
			free_table(pt, slot_table(s), level - 1);
	}
	hmm__free(t);
	pt->ntables--;
}

static int radix_create(void **out)
{
	struct pt *pt = hmm__calloc(1, sizeof(*pt));

	if (!pt)
		return -ENOMEM;
	*out = pt;
	return 0;
}

static void radix_destroy(void *p)
{
	struct pt *pt = p;

	for (unsigned i = 0; i < PT_SLOTS; i++)
		if (pt->root.slot[i])
			free_table(pt, slot_table(pt->root.slot[i]), PT_LEVELS - 2);
	HMM_ASSERT(pt->ntables == 0);
	hmm__free(pt);
}

static int radix_map(void *p, uint64_t va, uint64_t pte, unsigned order)
{
	struct pt *pt = p;
	struct pt_table *fresh[3] = { NULL, NULL, NULL };
	struct pt_table *t2, *t1, *t0;
	unsigned nfresh = 0, nused = 0;
	uint64_t size, *s1;

	if (order != 0 && order != HMM__PT_LARGE_ORDER)
		return -EINVAL;
	size = HMM__PT_SIZE << order;
	if (va >= HMM__VA_LIMIT || (va & (size - 1)) || !(pte & HMM__PTE_VALID) ||
	    (hmm__pte_addr(pte) & (size - 1)))
		return -EINVAL;
	if (order)
		pte |= HMM__PTE_LARGE;
	else
		pte &= ~HMM__PTE_LARGE;

	/*
	 * Allocate every table the entry needs before touching anything, so
	 * that -ENOMEM leaves the table as it was.
	 */
	t2 = pt->root.slot[level_index(va, 3)] ? slot_table(pt->root.slot[level_index(va, 3)]) : NULL;
	t1 = t2 && t2->slot[level_index(va, 2)] ? slot_table(t2->slot[level_index(va, 2)]) : NULL;
	s1 = t1 ? &t1->slot[level_index(va, 1)] : NULL;
	nfresh = !t2 + !t1 + (order == 0 && (!s1 || !*s1 || slot_is_pte(*s1)));
	for (unsigned i = 0; i < nfresh; i++) {
		fresh[i] = hmm__calloc(1, sizeof(struct pt_table));
		if (!fresh[i]) {
			while (i--)
				hmm__free(fresh[i]);
			return -ENOMEM;
		}
	}
	pt->ntables += nfresh;

	if (!t2) {
		t2 = fresh[nused++];
		pt->root.slot[level_index(va, 3)] = table_slot(t2);
		pt->root.count++;
	}
	if (!t1) {
		t1 = fresh[nused++];
		t2->slot[level_index(va, 2)] = table_slot(t1);
		t2->count++;
		s1 = &t1->slot[level_index(va, 1)];
	}

	if (order) {
		if (!*s1) {
			t1->count++;
		} else if (!slot_is_pte(*s1)) {
			/* The small entries below go, and their table with them. */
			free_table(pt, slot_table(*s1), 0);
		}
		*s1 = pte;
		return 0;
	}

	if (!*s1 || slot_is_pte(*s1)) {
		/* A large entry here is dropped whole; a new leaf table replaces it. */
		HMM_ASSERT(!*s1 || (*s1 & HMM__PTE_LARGE));
		if (!*s1)
			t1->count++;
		t0 = fresh[nused++];
		*s1 = table_slot(t0);
	} else {
		t0 = slot_table(*s1);
	}
	HMM_ASSERT(nused == nfresh);
	if (!t0->slot[level_index(va, 0)])
		t0->count++;
	t0->slot[level_index(va, 0)] = pte;
	return 0;
}

static uint64_t radix_lookup(void *p, uint64_t va, unsigned *order)
{
	struct pt *pt = p;
	uint64_t s;

	if (va >= HMM__VA_LIMIT)
		return 0;
	s = pt->root.slot[level_index(va, 3)];
	if (!s)
		return 0;
	s = slot_table(s)->slot[level_index(va, 2)];
	if (!s)
		return 0;
	s = slot_table(s)->slot[level_index(va, 1)];
	if (!s)
		return 0;
	if (slot_is_pte(s)) {
		HMM_ASSERT(s & HMM__PTE_LARGE);
		if (order)
			*order = HMM__PT_LARGE_ORDER;
		return s;
	}
	s = slot_table(s)->slot[level_index(va, 0)];
	if (s && order)
		*order = 0;
	return s;
}

/* What a range operation does to the entries it covers. */
struct range_op {
	uint64_t start, end; /* end <= HMM__VA_LIMIT */
	bool unmap;          /* else protect */
	uint64_t clear;      /* protect: flags to clear */
	uint64_t dropped;    /* 4 KiB pages that were present and are gone */
};

/* The slots of table t (at level, covering va base up) that overlap the op's range. */
static void slot_span(const struct range_op *op, uint64_t base, unsigned level,
		      unsigned *first, unsigned *last)
{
	unsigned shift = level_shift(level);
	uint64_t lo = op->start > base ? op->start : base;
	uint64_t hi = op->end - 1; /* the range is not empty */
	uint64_t top = base + ((uint64_t)PT_SLOTS << shift) - 1;

	if (hi > top)
		hi = top;
	*first = (lo - base) >> shift;
	*last = (hi - base) >> shift;
}

/*
 * Apply op to the part of its range that table t covers; t is at level and
 * maps va base up.  Tables below that become empty are freed.
 */
static void range_apply(struct pt *pt, struct pt_table *t, unsigned level, uint64_t base,
			struct range_op *op)
{
	unsigned shift = level_shift(level), first, last;

	slot_span(op, base, level, &first, &last);
	for (unsigned i = first; i <= last && t->count; i++) {
		uint64_t *s = &t->slot[i];
		uint64_t va = base + ((uint64_t)i << shift);

		if (!*s)
			continue;
		if (slot_is_pte(*s)) {
			bool whole = va >= op->start && va + (1ULL << shift) <= op->end;

			if (op->unmap || (level > 0 && !whole)) {
				/* A large entry partly inside is dropped whole. */
				op->dropped += 1ULL << (shift - HMM__PT_SHIFT);
				*s = 0;
				t->count--;
			} else {
				*s &= ~op->clear;
			}
			continue;
		}
		HMM_ASSERT(level > 0);
		range_apply(pt, slot_table(*s), level - 1, va, op);
		if (slot_table(*s)->count == 0) {
			hmm__free(slot_table(*s));
			pt->ntables--;
			*s = 0;
			t->count--;
		}
	}
}

static uint64_t radix_unmap(void *p, uint64_t start, uint64_t end)
{
	struct range_op op = { .start = start, .end = end, .unmap = true };

	if (op.end > HMM__VA_LIMIT)
		op.end = HMM__VA_LIMIT;
	if (op.start >= op.end)
		return 0;
	range_apply(p, &((struct pt *)p)->root, PT_LEVELS - 1, 0, &op);
	return op.dropped;
}

static void radix_protect(void *p, uint64_t start, uint64_t end, uint64_t clear)
{
	struct range_op op = {
		.start = start,
		.end = end,
		.clear = clear & HMM__PTE_FLAGS_MASK & ~(HMM__PTE_VALID | HMM__PTE_LARGE),
	};

	if (op.end > HMM__VA_LIMIT)
		op.end = HMM__VA_LIMIT;
	if (op.start >= op.end)
		return;
	range_apply(p, &((struct pt *)p)->root, PT_LEVELS - 1, 0, &op);
}

struct walk_op {
	struct range_op range;
	int (*fn)(void *arg, uint64_t va, uint64_t pte, unsigned order);
	void *arg;
};

static int walk_table(struct pt_table *t, unsigned level, uint64_t base, struct walk_op *w)
{
	unsigned shift = level_shift(level), first, last;

	slot_span(&w->range, base, level, &first, &last);
	for (unsigned i = first; i <= last; i++) {
		uint64_t s = t->slot[i];
		uint64_t va = base + ((uint64_t)i << shift);
		int ret;

		if (!s)
			continue;
		if (slot_is_pte(s))
			ret = w->fn(w->arg, va, s, (shift - HMM__PT_SHIFT));
		else
			ret = walk_table(slot_table(s), level - 1, va, w);
		if (ret)
			return ret;
	}
	return 0;
}

static int radix_walk(void *p, uint64_t start, uint64_t end,
		      int (*fn)(void *arg, uint64_t va, uint64_t pte, unsigned order), void *arg)
{
	struct walk_op w = { .range = { .start = start, .end = end }, .fn = fn, .arg = arg };

	if (w.range.end > HMM__VA_LIMIT)
		w.range.end = HMM__VA_LIMIT;
	if (w.range.start >= w.range.end)
		return 0;
	return walk_table(&((struct pt *)p)->root, PT_LEVELS - 1, 0, &w);
}

static size_t radix_footprint(void *p)
{
	struct pt *pt = p;

	return sizeof(*pt) + pt->ntables * sizeof(struct pt_table);
}

const struct hmm__pt_ops hmm__pt_radix_ops = {
	.size = sizeof(struct hmm_pt_ops),
	.name = "radix",
	.create = radix_create,
	.destroy = radix_destroy,
	.map = radix_map,
	.unmap = radix_unmap,
	.protect = radix_protect,
	.lookup = radix_lookup,
	.walk = radix_walk,
	.footprint = radix_footprint,
};

HMM_EXPORT const struct hmm_pt_ops *hmm_pt_radix(void)
{
	return &hmm__pt_radix_ops;
}
