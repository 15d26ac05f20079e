/* SPDX-License-Identifier: MIT */
/*
 * kernel_vadd - a device kernel on plain malloc'd memory.
 *
 * An embedded device adds two arrays that the program allocated with
 * malloc: no device buffers, no copies.  The kernel maps a row of each
 * array at a time (hmm_kernel_map) and adds them with ordinary C; the
 * device faults the arrays in on first touch, as a GPU with HMM does.
 * Prints the result's check and the mirror's counters.
 *
 * Build: cc kernel_vadd.c $(pkg-config --cflags --libs libhmm)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hmm.h>

#define N (1u << 20)
#define ROW 1024u

struct args {
	const float *a, *b;
	float *c;
};

static void vadd(struct hmm_kernel *k, void *arg)
{
	struct args *v = arg;
	uint64_t i = hmm_kernel_item(k) * ROW;
	struct hmm_kernel_span sp[3] = {
		{ (void *)&v->a[i], ROW * sizeof(float), false, NULL },
		{ (void *)&v->b[i], ROW * sizeof(float), false, NULL },
		{ &v->c[i], ROW * sizeof(float), true, NULL },
	};
	const float *x, *y;
	float *z;

	if (hmm_kernel_map(k, sp, 3))
		return; /* the launch reports the error */
	x = sp[0].addr;
	y = sp[1].addr;
	z = sp[2].addr;
	for (unsigned j = 0; j < ROW; j++)
		z[j] = x[j] + y[j];
}

int main(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 64 << 20, .numa_node = -1 };
	float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
	float *c = calloc(N, sizeof(float));
	struct args v = { a, b, c };
	struct hmm_mirror_stats st;
	struct hmm_device *dev;
	struct hmm_mirror *mirror;
	unsigned wrong = 0;
	int err;

	if (!a || !b || !c)
		return 1;
	for (unsigned i = 0; i < N; i++) {
		a[i] = (float)i;
		b[i] = (float)(2 * i);
	}
	err = hmm_device_create(&cfg, &dev);
	if (!err)
		err = hmm_mirror_create(dev, &mirror);
	if (err) {
		fprintf(stderr, "kernel_vadd: device: %s\n", strerror(-err));
		return 1;
	}
	err = hmm_launch(mirror, N / ROW, vadd, &v);
	if (err) {
		fprintf(stderr, "kernel_vadd: launch: %s\n", strerror(-err));
		return 1;
	}
	for (unsigned i = 0; i < N; i++)
		wrong += c[i] != (float)(3 * i);
	hmm_mirror_stats(mirror, &st);
	printf("c = a + b over %u floats: %s\n", N, wrong ? "WRONG" : "ok");
	printf("device fault rounds: %llu, pages faulted: %llu\n",
	       (unsigned long long)st.faults, (unsigned long long)st.pages_faulted);
	printf("launches: %llu\n", (unsigned long long)st.launches);
	hmm_mirror_destroy(mirror);
	hmm_device_destroy(dev);
	free(a);
	free(b);
	free(c);
	return wrong ? 1 : 0;
}
