/* SPDX-License-Identifier: MIT */
/*
 * exclusive_atomics - a device and a CPU thread adding to the same counter
 * atomically, the page changing hands between them.
 *
 * The device's atomics need the page for itself (exclusive access): its
 * first atomic takes it from the CPU, and the CPU thread's next add faults
 * and takes it back, as with the kernel's make_device_exclusive.  No add is
 * lost.  Prints the total and how often the device had to take the page.
 *
 * Build: cc exclusive_atomics.c $(pkg-config --cflags --libs libhmm) -pthread
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hmm.h>

#define PAGE 4096u
#define DEVICE_ADDS 10000u
#define CPU_ADDS 10000u

static uint64_t *counter;

static void *cpu_adds(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < CPU_ADDS; i++) {
		__atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
		if (i % 16 == 0)
			usleep(1);
	}
	return NULL;
}

int main(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 1 << 20, .numa_node = -1 };
	struct hmm_mirror_stats st;
	struct hmm_device *dev;
	struct hmm_mirror *m;
	pthread_t t;
	int err;

	counter = aligned_alloc(PAGE, PAGE);
	if (!counter)
		return 1;
	*counter = 0;
	err = hmm_device_create(&cfg, &dev);
	if (!err)
		err = hmm_mirror_create(dev, &m);
	if (err) {
		fprintf(stderr, "exclusive_atomics: device: %s\n", strerror(-err));
		return 1;
	}
	if (pthread_create(&t, NULL, cpu_adds, NULL))
		return 1;
	for (unsigned i = 0; i < DEVICE_ADDS && !err; i++) {
		if (i % 16 == 0)
			usleep(1);
		err = hmm_mirror_atomic_add_u64(m, (uint64_t)(uintptr_t)counter, 1, NULL);
	}
	pthread_join(t, NULL);
	if (err) {
		fprintf(stderr, "exclusive_atomics: atomic: %s\n", strerror(-err));
		return 1;
	}
	hmm_mirror_stats(m, &st);
	printf("counter = %u device adds + %u CPU adds = %llu: %s\n", DEVICE_ADDS, CPU_ADDS,
	       (unsigned long long)*counter,
	       *counter == DEVICE_ADDS + CPU_ADDS ? "ok" : "WRONG");
	printf("the device took the page %llu times\n", (unsigned long long)st.pages_faulted);
	hmm_mirror_destroy(m);
	hmm_device_destroy(dev);
	free(counter);
	return 0;
}
