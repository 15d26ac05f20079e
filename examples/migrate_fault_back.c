/* SPDX-License-Identifier: MIT */
/*
 * migrate_fault_back - anonymous memory moved to a device, used there in
 * place, and brought back by the accesses of another device and of the CPU.
 *
 * An array the program allocated moves into the memory of device 0.  A
 * kernel on device 0 doubles it without any page leaving the device.
 * Device 1 then reads the first 16 pages: they are not in its memory, so
 * its fault brings them back to host RAM.  Finally the CPU reads the whole
 * array: each page still on device 0 faults and comes back.  Prints where
 * the pages are after each step.
 *
 * Build: cc migrate_fault_back.c $(pkg-config --cflags --libs libhmm)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hmm.h>

#define PAGES 256u
#define PAGE 4096u
#define N (PAGES * PAGE / sizeof(double))

static void twice(struct hmm_kernel *k, void *arg)
{
	double *x = arg;
	uint64_t i = hmm_kernel_item(k);

	hmm_st_f64(k, &x[i], 2 * hmm_ld_f64(k, &x[i]));
}

static void report(const char *when, struct hmm_device *d0, struct hmm_device *d1)
{
	struct hmm_device_stats s0, s1;

	hmm_device_stats(d0, &s0);
	hmm_device_stats(d1, &s1);
	printf("%-34s dev0 holds %3llu pages, dev1 %3llu; pages back from dev0: %3llu, "
	       "CPU faults: %3llu\n", when, (unsigned long long)(s0.used / PAGE),
	       (unsigned long long)(s1.used / PAGE), (unsigned long long)s0.pages_out,
	       (unsigned long long)s0.cpu_faults);
}

int main(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 4 << 20, .numa_node = -1, .compute_units = 2 };
	double *x = aligned_alloc(PAGE, PAGES * PAGE);
	static char buf[16 * PAGE];
	struct hmm_device *d0, *d1;
	struct hmm_mirror *m0, *m1;
	uint64_t moved;
	unsigned wrong = 0;
	int err;

	if (!x)
		return 1;
	for (size_t i = 0; i < N; i++)
		x[i] = (double)i;
	err = hmm_device_create(&cfg, &d0);
	if (!err)
		err = hmm_device_create(&cfg, &d1);
	if (!err)
		err = hmm_mirror_create(d0, &m0);
	if (!err)
		err = hmm_mirror_create(d1, &m1);
	if (!err)
		err = hmm_migrate_to_device(d0, x, PAGES * PAGE, &moved);
	if (err) {
		fprintf(stderr, "migrate_fault_back: %s\n", strerror(-err));
		return 1;
	}
	printf("moved %llu pages to dev0\n", (unsigned long long)moved);
	report("after the migration:", d0, d1);

	err = hmm_launch(m0, N, twice, x);
	if (err) {
		fprintf(stderr, "migrate_fault_back: launch: %s\n", strerror(-err));
		return 1;
	}
	report("after a kernel on dev0:", d0, d1);

	err = hmm_mirror_read(m1, (uint64_t)(uintptr_t)x, buf, sizeof(buf));
	if (err) {
		fprintf(stderr, "migrate_fault_back: dev1 read: %s\n", strerror(-err));
		return 1;
	}
	report("after dev1 read 16 pages:", d0, d1);

	for (size_t i = 0; i < N; i++)
		wrong += x[i] != 2.0 * (double)i;
	report("after the CPU read everything:", d0, d1);
	printf("x[i] == 2 * i for all %zu doubles: %s\n", (size_t)N, wrong ? "WRONG" : "ok");

	hmm_mirror_destroy(m0);
	hmm_mirror_destroy(m1);
	hmm_device_destroy(d0);
	hmm_device_destroy(d1);
	free(x);
	return wrong ? 1 : 0;
}
