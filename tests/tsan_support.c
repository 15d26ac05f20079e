/* SPDX-License-Identifier: MIT */
/*
 * tsan_support.c - what the test programs need to run under ThreadSanitizer
 * (--enable-sanitizers=thread).  Other builds compile this file to nothing.
 *
 * Criterion's sandbox (BoxFort) shares an "inheritable arena" with each
 * test process at the same address in both.  It picks that address with
 * rand_r() in [0x2000'0000'0000, 0x6000'0000'0000), at a 16 MiB step, and
 * gives up after ten addresses that are already mapped.  Under TSan most of
 * that range is TSan's shadow or reserved gaps; only 0x5500'0000'0000 to
 * 0x5a00'0000'0000 is application memory, so the runner fails about half
 * of the time with "Could not initialize inheritable arena".  The test
 * programs therefore define rand_r() so that its values land in that
 * window: a linear congruential generator whose output is an offset into
 * the window.  The tests use rng.h, not rand_r().
 */
#include "config.h"

#if defined(__SANITIZE_THREAD__)
#include <stdlib.h>

/* BoxFort's address: 0x2000'0000'0000 + (value & 0x3fffff) * 16 MiB. */
#define ARENA_BASE 0x200000000000ull
#define ARENA_STEP (1ull << 24)
#define APP_WINDOW 0x550000000000ull	/* TSan's application memory ... */
#define APP_SPAN (1ull << 40)		/* ... of which the first 1 TiB */

int rand_r(unsigned int *seed)
{
	unsigned long long first = (APP_WINDOW - ARENA_BASE) / ARENA_STEP;

	*seed = *seed * 1103515245u + 12345u;
	return (int)(first + (*seed >> 8) % (APP_SPAN / ARENA_STEP));
}
#endif
