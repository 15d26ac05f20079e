/* SPDX-License-Identifier: MIT */
/*
 * pagetable.h - a simulated device's page tables and TLBs (libhmm private).
 *
 * A mirror translates the device virtual addresses of one process (which
 * are the process's own virtual addresses) with a device page table.  The
 * table's format is behind an ops table so that a driver prototyper can plug
 * in another one; pt_radix.c is the reference format.  In front of the table
 * each compute unit has a software TLB (tlb.c).
 *
 * Locking: the page-table ops take no locks.  The caller (the mirror)
 * serialises every writer and every reader of one table with its own lock.
 * A TLB belongs to one compute unit (one thread) and is used by that thread
 * only, so it has no lock either; it is kept coherent with the table by a
 * generation counter (see "The generation protocol" below).
 */
#ifndef HMM_PAGETABLE_H
#define HMM_PAGETABLE_H

#include "hmm-internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Device virtual addresses are user addresses: below 2^47. */
#define HMM__VA_LIMIT (1ULL << 47)

#define HMM__PT_SHIFT 12
#define HMM__PT_SIZE (1ULL << HMM__PT_SHIFT)
#define HMM__PT_LARGE_ORDER 9u  /* a large entry maps 4 KiB << 9 = 2 MiB */
#define HMM__PT_LARGE_SHIFT (HMM__PT_SHIFT + HMM__PT_LARGE_ORDER)
#define HMM__PT_LARGE_SIZE (1ULL << HMM__PT_LARGE_SHIFT)

/*
 * A page-table entry: the public format (HMM_PTE_* in hmm.h), under the
 * internal names.
 */
#define HMM__PTE_VALID     HMM_PTE_VALID
#define HMM__PTE_WRITE     HMM_PTE_WRITE
#define HMM__PTE_DEVICE    HMM_PTE_DEVICE
#define HMM__PTE_EXCLUSIVE HMM_PTE_EXCLUSIVE
#define HMM__PTE_LARGE     HMM_PTE_LARGE
#define HMM__PTE_FLAGS_MASK (HMM__PT_SIZE - 1)
#define HMM__PTE_ADDR_MASK (~HMM__PTE_FLAGS_MASK)

static inline uint64_t hmm__pte_make(uint64_t addr, uint64_t flags)
{
	HMM_ASSERT((addr & HMM__PTE_FLAGS_MASK) == 0);
	return (addr & HMM__PTE_ADDR_MASK) | (flags & HMM__PTE_FLAGS_MASK);
}

static inline uint64_t hmm__pte_addr(uint64_t pte)
{
	return pte & HMM__PTE_ADDR_MASK;
}

static inline uint64_t hmm__pte_flags(uint64_t pte)
{
	return pte & HMM__PTE_FLAGS_MASK;
}

/* The page-table ops are public (struct hmm_pt_ops in hmm.h): a driver
 * prototype plugs in its own format with hmm_mirror_create_pt(). */
#define hmm__pt_ops hmm_pt_ops

/*
 * pt_radix.c - the reference format: four levels of 512 8-byte entries,
 * 9 bits each like x86-64 (12 + 4 * 9 = 48 bits).  Level-1 entries either
 * point at a table of 4 KiB entries or hold a 2 MiB entry themselves.
 */
extern const struct hmm__pt_ops hmm__pt_radix_ops;

/* ------------------------------------------------------------------------
 * tlb.c - a per-compute-unit software TLB in front of the page table.
 *
 * The generation protocol.  The device keeps one uint64_t generation per
 * page table (the gen_src of hmm__tlb_lookup).  Every TLB remembers the
 * generation it was filled under, and its lookup compares that with the
 * device's (an acquire load) before anything else; if they differ, the TLB
 * flushes itself and adopts the new one.
 *
 *   invalidation (writer)                  compute unit (reader)
 *   lock(mirror)                           hmm__tlb_lookup: g = gen (acquire)
 *   change the page table                    g != t->gen: flush, t->gen = g, miss
 *   hmm__tlb_gen_bump(gen) (release)       on a miss: lock(mirror)
 *   unlock(mirror)                                     pte = lookup(table)
 *   wait for in-flight accesses (*)                    hmm__tlb_fill(t, va, pte)
 *                                                      unlock(mirror)
 *
 * Why a fill can never outlive the change it missed: a fill is made from a
 * table read under the lock after the lookup's load of the generation.  If
 * that read saw the table before a change, the change's bump comes after
 * the read, so the generation the next lookup loads differs from t->gen and
 * the stale entry is flushed before it is used again.  A change whose bump
 * the lookup already saw was made before the bump (release/acquire), so the
 * read sees it.  The cost is an occasional needless flush.
 *
 * (*) An access that translated before the bump may still be in flight
 * after it.  The wait that makes an invalidation wait for those (the
 * shootdown) is not here: the caller provides it.
 *
 * Invariant: at most one entry translates any va (hmm__tlb_fill removes
 * entries that overlap the one it adds), so a hit returns the latest fill.
 * ------------------------------------------------------------------------ */
#define HMM__TLB_SETS 64        /* 4 KiB entries: 64 sets x 4 ways, by va bits 17..12 */
#define HMM__TLB_WAYS 4
#define HMM__TLB_LARGE 8        /* 2 MiB entries: fully associative */

struct hmm__tlb_entry {
	uint64_t tag; /* (va >> page shift) + 1; 0 when the entry is empty */
	uint64_t pte;
};

struct hmm__tlb {
	uint64_t gen; /* the device generation the entries belong to */
	struct hmm__tlb_entry small[HMM__TLB_SETS][HMM__TLB_WAYS];
	struct hmm__tlb_entry large[HMM__TLB_LARGE];
	uint8_t small_next[HMM__TLB_SETS]; /* round-robin victim per set */
	uint8_t large_next;
	uint64_t hits;
	uint64_t misses;
	uint64_t flushes; /* whole-TLB flushes: hmm__tlb_flush_all and generation changes */
};

/* An empty TLB at generation 0. */
void hmm__tlb_init(struct hmm__tlb *t);
/*
 * hmm__tlb_fill() - remember that va translates through pte, an entry of
 * order 0 or 9 (as the page table returned it).  Entries that overlap it
 * are dropped; when its set is full, the set's round-robin victim goes.
 * Context: the caller read pte from the page table after the last
 * hmm__tlb_lookup, under the table's lock.
 */
void hmm__tlb_fill(struct hmm__tlb *t, uint64_t va, uint64_t pte, unsigned order);
/* Drop every entry overlapping [start, end), and only those. */
void hmm__tlb_flush_range(struct hmm__tlb *t, uint64_t start, uint64_t end);
/* Drop every entry; counts in flushes. */
void hmm__tlb_flush_all(struct hmm__tlb *t);

/*
 * hmm__tlb_lookup() - translate va: the fast path of every device load and
 * store.  First the generation check: if *gen_src differs from t->gen, the
 * TLB is flushed, adopts *gen_src and misses.
 * Context: the thread that owns t; no locks.
 * Return: true on a hit with *pte (the entry as filled, whose address is
 * that of the page's first byte) and *order set; false on a miss.
 */
static inline bool hmm__tlb_lookup(struct hmm__tlb *t, const uint64_t *gen_src,
				   uint64_t va, uint64_t *pte, unsigned *order)
{
	uint64_t gen = __atomic_load_n(gen_src, __ATOMIC_ACQUIRE);
	uint64_t tag = (va >> HMM__PT_SHIFT) + 1;
	const struct hmm__tlb_entry *set;

	if (__builtin_expect(gen != t->gen, 0)) {
		hmm__tlb_flush_all(t);
		t->gen = gen;
		t->misses++;
		return false;
	}
	set = t->small[(va >> HMM__PT_SHIFT) % HMM__TLB_SETS];
	for (unsigned w = 0; w < HMM__TLB_WAYS; w++) {
		if (set[w].tag == tag) {
			*pte = set[w].pte;
			*order = 0;
			t->hits++;
			return true;
		}
	}
	tag = (va >> HMM__PT_LARGE_SHIFT) + 1;
	for (unsigned i = 0; i < HMM__TLB_LARGE; i++) {
		if (t->large[i].tag == tag) {
			*pte = t->large[i].pte;
			*order = HMM__PT_LARGE_ORDER;
			t->hits++;
			return true;
		}
	}
	t->misses++;
	return false;
}

/*
 * hmm__tlb_gen_bump() - publish a page-table change to every TLB: call it
 * after the change is complete.  Return: the new generation.
 */
static inline uint64_t hmm__tlb_gen_bump(uint64_t *gen)
{
	return __atomic_add_fetch(gen, 1, __ATOMIC_RELEASE);
}

#endif /* HMM_PAGETABLE_H */
