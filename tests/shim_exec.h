/* SPDX-License-Identifier: MIT */
/*
 * shim_exec.h - running a test program again under libhmm_dmirror.so, for
 * the programs written against the kernel driver's interface only
 * (test_dmirror, test_dmirror_hmmfs): no libhmm, no hmm.h.
 */
#ifndef HMMFS_TESTS_SHIM_EXEC_H
#define HMMFS_TESTS_SHIM_EXEC_H

/* This process's own arguments, from /proc/self/cmdline (NULL-terminated,
 * in static storage).  Aborts if they cannot be read. */
char **shim_own_argv(void);

/*
 * Execute this program again with argv, with shim preloaded behind the
 * sanitizer runtime this process runs with, if any (a sanitizer's runtime
 * must come first), and HMM_DMIRROR_TEST_SHIMMED=1 in the environment, so
 * that the new image knows it runs under the shim.  Returns only if exec
 * fails, having said why on stderr.
 */
void shim_exec(char **argv, const char *shim);

#endif
