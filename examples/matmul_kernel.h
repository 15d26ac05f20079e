/* SPDX-License-Identifier: MIT */
/*
 * matmul_kernel.h - the device kernel of matmul.c: C = A B for n x n
 * doubles, one work item per row of C.  tests/bench/bench_mirror.c
 * measures this very kernel against the same loop on CPU threads.
 */
#ifndef MATMUL_KERNEL_H
#define MATMUL_KERNEL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include <hmm.h>

/* The largest n: the fallback keeps a row of A on the stack. */
#define MATMUL_MAX_N 1024

struct matmul_operands {
	const double *a, *b;
	double *c;
	unsigned n;      /* at most MATMUL_MAX_N */
};

/* Row i of C = row i of A times B, with plain loads and stores. */
static inline void matmul_row_product(const double *row, const double *b, double *c,
				      unsigned n)
{
	for (unsigned j = 0; j < n; j++) {
		double sum = 0;

		for (unsigned x = 0; x < n; x++)
			sum += row[x] * b[x * n + j];
		c[j] = sum;
	}
}

/* The slow way: the row of A read with hmm_kernel_read(), B loaded and C
 * stored one element at a time through the device's translation. */
static inline void matmul_row_typed(struct hmm_kernel *k, void *arg)
{
	struct matmul_operands *o = arg;
	uint64_t i = hmm_kernel_item(k);
	unsigned n = o->n;
	double row[MATMUL_MAX_N];

	if (hmm_kernel_read(k, &o->a[i * n], row, n * sizeof(double)))
		return; /* the launch stops with the error */
	for (unsigned j = 0; j < n; j++) {
		double sum = 0;

		for (unsigned x = 0; x < n; x++)
			sum += row[x] * hmm_ld_f64(k, &o->b[x * n + j]);
		hmm_st_f64(k, &o->c[i * n + j], sum);
	}
}

/*
 * The kernel.  The fast way: map the row of A, all of B and the row of C
 * for direct use (hmm_kernel_map), at the speed of CPU code.  A span the
 * device sees in scattered pieces (-ERANGE: B moved page by page into
 * device memory) is done the slow way instead.
 */
static inline void matmul_row(struct hmm_kernel *k, void *arg)
{
	struct matmul_operands *o = arg;
	uint64_t i = hmm_kernel_item(k);
	size_t n = o->n;
	struct hmm_kernel_span sp[3] = {
		{ (void *)&o->a[i * n], n * sizeof(double), false, NULL },
		{ (void *)o->b, n * n * sizeof(double), false, NULL },
		{ &o->c[i * n], n * sizeof(double), true, NULL },
	};
	int err = hmm_kernel_map(k, sp, 3);

	if (!err)
		matmul_row_product(sp[0].addr, sp[1].addr, sp[2].addr, o->n);
	else if (err == -ERANGE)
		matmul_row_typed(k, arg);
	/* else the launch stops with the error */
}

#endif
