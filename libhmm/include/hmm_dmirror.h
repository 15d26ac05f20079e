/* SPDX-License-Identifier: MIT */
/*
 * hmm_dmirror.h - the interface of Linux's HMM test driver (lib/test_hmm.c,
 * "dmirror", devices /dev/hmm_dmirror0 to 3), as libhmm_dmirror.so serves
 * it in user space (libhmm_dmirror(7)).  Binary compatible with the
 * kernel's test_hmm_uapi.h: a program built against either runs against
 * the kernel module or, with LD_PRELOAD=libhmm_dmirror.so, against libhmm.
 */
#ifndef HMM_DMIRROR_H
#define HMM_DMIRROR_H

#include <linux/ioctl.h>
#include <linux/types.h>

/**
 * struct hmm_dmirror_cmd - the argument of every HMM_DMIRROR_* command.
 * @addr: in: the first byte of the process's memory the device uses (page
 *	aligned).
 * @ptr: in: the caller's buffer: where READ, SNAPSHOT and the migrations put
 *	what the device read (SNAPSHOT: one byte per page), where WRITE takes
 *	what it writes.
 * @npages: in: pages from addr (more than 0); for FLAGS, the flags.
 * @cpages: out: pages the command handled.
 * @faults: out: device fault rounds READ and WRITE needed.
 */
struct hmm_dmirror_cmd {
	__u64 addr;
	__u64 ptr;
	__u64 npages;
	__u64 cpages;
	__u64 faults;
};

#define HMM_DMIRROR_READ		_IOWR('H', 0x00, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_WRITE		_IOWR('H', 0x01, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_MIGRATE_TO_DEV	_IOWR('H', 0x02, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_MIGRATE_TO_SYS	_IOWR('H', 0x03, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_SNAPSHOT		_IOWR('H', 0x04, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_EXCLUSIVE		_IOWR('H', 0x05, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_CHECK_EXCLUSIVE	_IOWR('H', 0x06, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_RELEASE		_IOWR('H', 0x07, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_FLAGS		_IOWR('H', 0x08, struct hmm_dmirror_cmd)

/* FLAGS: the device's next page allocation for a migration fails, once. */
#define HMM_DMIRROR_FLAG_FAIL_ALLOC	(1ULL << 0)

/* SNAPSHOT: one byte per page. */
enum {
	HMM_DMIRROR_PROT_ERROR			= 0xFF, /* no mapping, or unreadable */
	HMM_DMIRROR_PROT_NONE			= 0x00, /* mapped, not present */
	HMM_DMIRROR_PROT_READ			= 0x01,
	HMM_DMIRROR_PROT_WRITE			= 0x02,
	HMM_DMIRROR_PROT_PMD			= 0x04, /* mapped by a 2 MiB page */
	HMM_DMIRROR_PROT_PUD			= 0x08, /* mapped by a 1 GiB page */
	HMM_DMIRROR_PROT_ZERO			= 0x10, /* the shared zero page */
	HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL	= 0x20, /* on this private device */
	HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE	= 0x30, /* on another private one */
	HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL	= 0x40, /* on this coherent device */
	HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE	= 0x50, /* on another coherent one */
};

/* The kinds of device memory: /dev/hmm_dmirror0 and 1 are private, 2 and 3 coherent. */
enum {
	HMM_DMIRROR_MEMORY_DEVICE_PRIVATE	= 1,
	HMM_DMIRROR_MEMORY_DEVICE_COHERENT	= 2,
};

#endif /* HMM_DMIRROR_H */
