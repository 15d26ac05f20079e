/* SPDX-License-Identifier: MIT */
/*
 * mount.h - start a real hmmfs on a fresh temporary directory for a test,
 * and take it down again, even after a failure.
 */
#ifndef HMMFS_TEST_MOUNT_H
#define HMMFS_TEST_MOUNT_H

#include <stddef.h>
#include <sys/types.h>

struct hmmfs_test_mount {
	char dir[64];   /* the mount point, e.g. /tmp/hmmfs-test.XXXXXX */
	pid_t pid;      /* the daemon, running in the foreground (-f) */
	unsigned conn;  /* its FUSE connection: the minor of the mount's st_dev */
};

/* The mount the default fixture (mnt_setup/mnt_teardown) manages. */
extern struct hmmfs_test_mount mnt;

/* The hmmfs binary under test: $HMMFS_BIN, else the one in the build tree. */
const char *hmmfs_test_binary(void);

/*
 * hmmfs_test_mount() - mount hmmfs with "-o allow_other" plus opts (NULL or
 * a comma-separated option list) and wait until the mount is live.
 * Return: 0, or -1 with a message on stderr (the daemon's own error is
 * printed by it).
 */
int hmmfs_test_mount(struct hmmfs_test_mount *m, const char *opts);

/*
 * hmmfs_test_umount() - unmount with fusermount3 -u, wait for the daemon to
 * exit (it must exit 0), and remove the directory.  Falls back to SIGKILL and
 * a lazy unmount if the daemon hangs, and to aborting the FUSE connection
 * (fusectl) if even SIGKILL cannot end it: a daemon stuck in the kernel on
 * a request to its own mount.  Return: the daemon's exit status, or
 * -1 if it had to be killed.
 */
int hmmfs_test_umount(struct hmmfs_test_mount *m);

/* Criterion fixtures: .init = mnt_setup, .fini = mnt_teardown. */
void mnt_setup(void);
void mnt_teardown(void);
/* Like mnt_setup, with extra mount options. */
void mnt_setup_opts(const char *opts);

/* A path inside mnt: returns a static buffer, overwritten by the next call
 * from the same thread. */
const char *mp(const char *rel);

/* Fill buf with a pattern that depends on seed and the absolute offset, and
 * check it; pattern_check returns the index of the first bad byte or -1. */
void pattern_fill(unsigned char *buf, size_t len, unsigned long long off, unsigned seed);
long long pattern_check(const unsigned char *buf, size_t len, unsigned long long off,
			unsigned seed);

#endif
