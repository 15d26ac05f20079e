/* SPDX-License-Identifier: MIT */
/*
 * bench_hmm.h - what the benchmarks of libhmm's embedded devices share (the
 * programs that link libhmm; bench, which must not, has bench_common.h
 * only): a device with its mirror, and a timed kernel launch.
 */
#ifndef HMMFS_BENCH_HMM_H
#define HMMFS_BENCH_HMM_H

#include <hmm.h>

/*
 * An embedded private device of memory bytes and units compute units, and
 * its mirror of this process, or die.
 */
void open_mirror(uint64_t memory, unsigned units, struct hmm_device **dev,
		 struct hmm_mirror **m);

/* The mirror, then the device. */
void close_mirror(struct hmm_device *dev, struct hmm_mirror *m);

/* hmm_launch(m, nitems, fn, arg), or die.  Return: seconds. */
double time_launch(struct hmm_mirror *m, uint64_t nitems, hmm_kernel_fn fn, void *arg);

#endif
