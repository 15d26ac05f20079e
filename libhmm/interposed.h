/* SPDX-License-Identifier: MIT */
/*
 * interposed.h - the C library functions that libhmm defines in their
 * place (invalidate.c): every change of the CPU's mappings goes through
 * them, so mirrors hear of it.  One list, X(name) for each, for the two
 * tables made from it: invalidate.c's of the C library's definitions,
 * which libhmm's call on, and libhmm_dmirror.so's of libhmm's, which the
 * shim must hand those calls to (dmirror.c, at the top).  A function
 * added to libhmm's set is added here, and both follow.
 */
#ifndef HMM_INTERPOSED_H
#define HMM_INTERPOSED_H

#define HMM__INTERPOSED(X) \
	X(mmap) X(munmap) X(mremap) X(mprotect) X(pkey_mprotect) X(madvise) \
	X(brk) X(sbrk) X(shmdt) X(fork)

/* A table's field for name: a pointer to a function of name's type. */
#define HMM__INTERPOSED_FIELD(name) __typeof__(name) *name;

#endif
