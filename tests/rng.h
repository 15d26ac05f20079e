/* SPDX-License-Identifier: MIT */
/*
 * rng.h - the tests' pseudo-random numbers: xorshift64, so that a seed
 * replays the same sequence everywhere.  One generator per test program
 * (the state is per translation unit); seed it with a non-zero value.
 */
#ifndef HMMFS_TEST_RNG_H
#define HMMFS_TEST_RNG_H

#include <stdint.h>

static uint64_t rng_state = 1;

static inline uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

#endif /* HMMFS_TEST_RNG_H */
