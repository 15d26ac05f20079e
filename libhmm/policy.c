/* SPDX-License-Identifier: MIT */
/*
 * policy.c - where a faulting page goes: the decision a driver's fault
 * handler makes between mapping a page of system memory where it is and
 * migrating it into device memory first.
 *
 *   HMM_POLICY_MAP      map system pages where they are (the default): the
 *                       device reads and writes host RAM across the bus.
 *   HMM_POLICY_MIGRATE  move the anonymous pages of a fault's window (the
 *                       faulting page and those the round maps ahead, at
 *                       least to the end of its 2 MiB block, within the
 *                       faulting page's mapping) to the device first
 *                       (hmm_migrate_to_device), then map them; what cannot
 *                       move (file and shared memory, a full device) is
 *                       mapped where it is.
 *
 * The fault buffer (fault.c) asks before each range it serves.
 */
#include "config.h"
#include "mirror.h"

#include <errno.h>

/* The block a migrating fault moves at least (to its end). */
#define MIGRATE_BLOCK (2ULL << 20)

HMM_EXPORT int hmm_mirror_set_policy(struct hmm_mirror *m, unsigned int policy)
{
	if (!m || (policy != HMM_POLICY_MAP && policy != HMM_POLICY_MIGRATE))
		return -EINVAL;
	__atomic_store_n(&m->policy, policy, __ATOMIC_RELAXED);
	return 0;
}

uint64_t hmm__policy_prepare(struct hmm_mirror *m, uint64_t page, uint64_t end)
{
	uint64_t vstart, vend;

	if (__atomic_load_n(&m->policy, __ATOMIC_RELAXED) != HMM_POLICY_MIGRATE)
		return end;
	/* The window, but not past the faulting page's mapping: pages of
	 * other mappings the kernel only maps ahead stay where they are. */
	if (hmm__vma_bounds(page, &vstart, &vend))
		return end;
	/* At least the 2 MiB block around the fault, as a GPU driver moves a
	 * whole block of its virtual address space: one migration per block,
	 * not per write fault's 64 KiB. */
	if (end < ((page | (MIGRATE_BLOCK - 1)) + 1))
		end = (page | (MIGRATE_BLOCK - 1)) + 1;
	if (end > vend)
		end = vend;
	if (end <= page)
		return page + m->page_size;
	/* Whatever could not move is simply mapped where it is. */
	(void)hmm_migrate_to_device(m->dev, (void *)(uintptr_t)page, (size_t)(end - page), NULL);
	return end;
}
