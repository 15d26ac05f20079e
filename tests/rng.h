/* SPDX-License-Identifier: MIT */
/*
 * rng.h - the tests' pseudo-random numbers: xorshift64, so that a seed
 * replays the same sequence everywhere.  rng() is the program's generator
 * (the state is per translation unit); rng_next() steps a state of the
 * caller's, e.g. one per thread.  Seed either with a non-zero value.
 */
#ifndef HMMFS_TEST_RNG_H
#define HMMFS_TEST_RNG_H

#include <stdint.h>

static inline uint64_t rng_next(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

static uint64_t rng_state = 1;

static inline uint64_t rng(void)
{
	return rng_next(&rng_state);
}

#endif /* HMMFS_TEST_RNG_H */
