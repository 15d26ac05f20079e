/* SPDX-License-Identifier: MIT */
/* Helpers the benchmarks of libhmm's devices share; see bench_hmm.h. */
#include "bench_hmm.h"

#include <string.h>

#include "bench_common.h"

void open_mirror(uint64_t memory, unsigned units, struct hmm_device **dev,
		 struct hmm_mirror **m)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = memory, .numa_node = -1,
					 .compute_units = units };
	int err = hmm_device_create(&cfg, dev);

	if (!err) {
		err = hmm_mirror_create(*dev, m);
		if (err)
			hmm_device_destroy(*dev);
	}
	if (err)
		die("device: %s", strerror(-err));
}

void close_mirror(struct hmm_device *dev, struct hmm_mirror *m)
{
	hmm_mirror_destroy(m);
	hmm_device_destroy(dev);
}

double time_launch(struct hmm_mirror *m, uint64_t nitems, hmm_kernel_fn fn, void *arg)
{
	double t0 = now_s();
	int err = hmm_launch(m, nitems, fn, arg);

	if (err)
		die("hmm_launch: %s", strerror(-err));
	return now_s() - t0;
}
