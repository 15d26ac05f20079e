/* SPDX-License-Identifier: MIT */
/*
 * mirror_invalidate - a device's view of the process, kept right when the
 * CPU's mappings change.
 *
 * The device reads a buffer (its page table fills by device faults), then
 * the program drops half of it with madvise(MADV_DONTNEED), write-protects
 * a quarter with mprotect and unmaps the last quarter: before each change,
 * libhmm invalidates the device's entries, so the device sees the zeros the
 * CPU sees, gets -EPERM writing the read-only part and -EFAULT reading the
 * unmapped part.  Prints what the device saw and the mirror's counters.
 *
 * Build: cc mirror_invalidate.c $(pkg-config --cflags --libs libhmm)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <hmm.h>

#define PAGES 64
#define PS 4096u

static void show(struct hmm_mirror *m, const char *when)
{
	struct hmm_mirror_stats st;

	hmm_mirror_stats(m, &st);
	printf("%-34s device pages mapped: %3llu, invalidations: %llu\n", when,
	       (unsigned long long)st.mapped_pages, (unsigned long long)st.invalidations);
}

int main(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 1 << 20, .numa_node = -1 };
	unsigned char *p = mmap(NULL, PAGES * PS, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	static unsigned char buf[PAGES * PS];
	struct hmm_device *dev;
	struct hmm_mirror *m;
	int err;

	if (p == MAP_FAILED)
		return 1;
	memset(p, 0x5a, PAGES * PS);
	err = hmm_device_create(&cfg, &dev);
	if (!err)
		err = hmm_mirror_create(dev, &m);
	if (err) {
		fprintf(stderr, "mirror_invalidate: device: %s\n", strerror(-err));
		return 1;
	}
	err = hmm_mirror_read(m, (uintptr_t)p, buf, PAGES * PS);
	printf("device read of %u pages: %s, first byte 0x%02x\n", PAGES,
	       err ? strerror(-err) : "ok", buf[0]);
	show(m, "after the device read:");

	madvise(p, PAGES / 2 * PS, MADV_DONTNEED);
	show(m, "after madvise(DONTNEED) of half:");
	err = hmm_mirror_read(m, (uintptr_t)p, buf, PS);
	printf("device read of a dropped page: %s, first byte 0x%02x (the CPU sees 0x%02x)\n",
	       err ? strerror(-err) : "ok", buf[0], p[0]);

	mprotect(p + PAGES / 2 * PS, PAGES / 4 * PS, PROT_READ);
	show(m, "after mprotect(PROT_READ):");
	err = hmm_mirror_write(m, (uintptr_t)p + PAGES / 2 * PS, buf, 16);
	printf("device write to a read-only page: %s\n", err == -EPERM ? "EPERM" : "unexpected");

	munmap(p + 3 * PAGES / 4 * PS, PAGES / 4 * PS);
	show(m, "after munmap of a quarter:");
	err = hmm_mirror_read(m, (uintptr_t)p + 3 * PAGES / 4 * PS, buf, PS);
	printf("device read of an unmapped page: %s\n", err == -EFAULT ? "EFAULT" : "unexpected");

	hmm_mirror_destroy(m);
	hmm_device_destroy(dev);
	munmap(p, 3 * PAGES / 4 * PS);
	return 0;
}
