/* SPDX-License-Identifier: MIT */
/*
 * snapshot.h - what a device sees of the CPU's page table, taken as the
 * kernel's test driver takes it, for the conformance programs (which link
 * libhmm).
 */
#ifndef HMMFS_TESTS_SNAPSHOT_H
#define HMMFS_TESTS_SNAPSHOT_H

#include <hmm.h>

#include <stddef.h>
#include <stdint.h>

/*
 * The words hmm_range_fault() gives device d over npages system pages from
 * start, faulting nothing in: the driver's loop of read_begin, range fault
 * and read_retry under its lock, on a notifier of the range alone.  pfns
 * holds npages words.  The test fails if the range fault does.
 */
void snapshot_range(struct hmm_device *d, uint64_t start, size_t npages, uint64_t *pfns);

#endif
