/* SPDX-License-Identifier: MIT */
/*
 * dmirror_client.h - what the test programs written against the kernel
 * driver's interface only (test_dmirror, test_dmirror_hmmfs: no libhmm, no
 * hmm.h) share: running again under libhmm_dmirror.so, opening a device
 * and sending it a command.
 */
#ifndef HMMFS_TESTS_DMIRROR_CLIENT_H
#define HMMFS_TESTS_DMIRROR_CLIENT_H

#include <hmm_dmirror.h>

#include <stdint.h>

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

/* /dev/hmm_dmirror<n>, opened for reading and writing; the test fails if
 * it cannot be. */
int dmirror_open(unsigned n);

/*
 * One command (HMM_DMIRROR_*) over npages from addr, ptr the command's
 * buffer, retried on EINTR.  cpages and faults go in with 777, to see that
 * the driver writes them.  Return: 0 with the command as written back in
 * *out (if not NULL), or -errno.
 */
int dmirror_cmd(int fd, unsigned long request, void *addr, void *ptr, uint64_t npages,
		struct hmm_dmirror_cmd *out);

#endif
