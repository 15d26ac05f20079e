/* SPDX-License-Identifier: MIT */
/*
 * bench_kernel.c - libhmm's device kernels (issue 4), each row against a
 * baseline measured in the same run: the same vector add on CPU threads,
 * one per compute unit.
 *
 * Usage: bench_kernel [-v] [-r REPS] [-n ELEMENTS] [-u UNITS]
 *
 * Rows (median over REPS, the compared cases interleaved):
 *  1. c[i] = a[i] + b[i] over ELEMENTS floats of malloc'd arrays, as a
 *     kernel with one work item per element and typed loads and stores
 *     (three device accesses per item, each a TLB hit once warm);
 *  2. the same with one work item per 1024-element row, moved with
 *     hmm_kernel_read/hmm_kernel_write;
 *  3. the same rows used in place through hmm_kernel_map;
 *  4. the first launch on fresh arrays: device faults included;
 *  5. the cost of one typed access on a TLB hit, from row 1, in ns.
 * Nothing is asserted: the machine is shared and noisy.  The exit status
 * is 1 only when the benchmark could not run or a result was wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hmm.h>

#include "bench_common.h"
#include "bench_hmm.h"

const char *const bench_prog = "bench_kernel";

#define ROW 1024

static float *a, *b, *c;
static uint64_t nelem;
static unsigned units = 2;

void usage(FILE *out)
{
	fprintf(out, "Usage: %s [-v] [-r REPS] [-n ELEMENTS] [-u UNITS]\n", bench_prog);
}

static void vadd_elem(struct hmm_kernel *k, void *arg)
{
	uint64_t i = hmm_kernel_item(k);

	(void)arg;
	hmm_st_f32(k, &c[i], hmm_ld_f32(k, &a[i]) + hmm_ld_f32(k, &b[i]));
}

static void vadd_row(struct hmm_kernel *k, void *arg)
{
	uint64_t i = hmm_kernel_item(k) * ROW;
	float x[ROW], y[ROW];

	(void)arg;
	if (hmm_kernel_read(k, &a[i], x, sizeof(x)) || hmm_kernel_read(k, &b[i], y, sizeof(y)))
		return;
	for (int j = 0; j < ROW; j++)
		x[j] += y[j];
	hmm_kernel_write(k, &c[i], x, sizeof(x));
}

static void vadd_map(struct hmm_kernel *k, void *arg)
{
	uint64_t i = hmm_kernel_item(k) * ROW;
	struct hmm_kernel_span sp[3] = {
		{ &a[i], sizeof(float) * ROW, false, NULL },
		{ &b[i], sizeof(float) * ROW, false, NULL },
		{ &c[i], sizeof(float) * ROW, true, NULL },
	};
	const float *x, *y;
	float *z;

	(void)arg;
	if (hmm_kernel_map(k, sp, 3))
		return;
	x = sp[0].addr;
	y = sp[1].addr;
	z = sp[2].addr;
	for (int j = 0; j < ROW; j++)
		z[j] = x[j] + y[j];
}

struct cpu_part {
	uint64_t first, end;
};

static void *cpu_vadd(void *arg)
{
	struct cpu_part *p = arg;

	for (uint64_t i = p->first; i < p->end; i++)
		c[i] = a[i] + b[i];
	return NULL;
}

static double run_cpu(void)
{
	pthread_t t[HMM_MAX_COMPUTE_UNITS];
	struct cpu_part part[HMM_MAX_COMPUTE_UNITS];
	double t0 = now_s();

	for (unsigned u = 0; u < units; u++) {
		part[u].first = nelem * u / units;
		part[u].end = nelem * (u + 1) / units;
		if (pthread_create(&t[u], NULL, cpu_vadd, &part[u]))
			die("pthread_create failed");
	}
	for (unsigned u = 0; u < units; u++)
		pthread_join(t[u], NULL);
	return now_s() - t0;
}

static double run_kernel(struct hmm_mirror *m, uint64_t items, hmm_kernel_fn fn)
{
	return time_launch(m, items, fn, NULL);
}

static void check(void)
{
	for (uint64_t i = 0; i < nelem; i += 997)
		if (c[i] != a[i] + b[i]) {
			failures++;
			fprintf(stderr, "%s: c[%llu] = %f, expected %f\n", bench_prog,
				(unsigned long long)i, c[i], a[i] + b[i]);
			return;
		}
}

static void line(const char *row, const char *unit, double value, double base)
{
	table_row(46, 6, row, unit, value, base, false);
}

int main(int argc, char **argv)
{
	double elem[MAX_REPS], row[MAX_REPS], map[MAX_REPS], cpu[MAX_REPS], first;
	struct hmm_device *dev;
	struct hmm_mirror *m;
	int reps = 5, opt;
	bool verbose = false;

	nelem = 1 << 22;
	while ((opt = getopt(argc, argv, "vr:n:u:h")) != -1) {
		switch (opt) {
		case 'n': nelem = (uint64_t)parse_count(optarg, "-n", ROW, 1L << 28); break;
		case 'u': units = (unsigned)parse_count(optarg, "-u", 1, HMM_MAX_COMPUTE_UNITS); break;
		default: common_option(opt, optarg, &reps, &verbose); break;
		}
	}
	expect_operands(argc, 0);
	nelem = nelem / ROW * ROW;
	a = malloc(nelem * sizeof(float));
	b = malloc(nelem * sizeof(float));
	c = malloc(nelem * sizeof(float));
	if (!a || !b || !c)
		die("out of memory");
	for (uint64_t i = 0; i < nelem; i++) {
		a[i] = (float)(i % 1000);
		b[i] = (float)(i % 777);
		c[i] = 0;
	}
	open_mirror(1 << 20, units, &dev, &m);

	first = run_kernel(m, nelem, vadd_elem); /* faults every page in */
	check();
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < 4; k++) {
			switch ((r + k) % 4) {
			case 0: elem[r] = run_kernel(m, nelem, vadd_elem); check(); break;
			case 1: row[r] = run_kernel(m, nelem / ROW, vadd_row); check(); break;
			case 2: map[r] = run_kernel(m, nelem / ROW, vadd_map); check(); break;
			case 3: cpu[r] = run_cpu(); break;
			}
		}
		if (verbose)
			fprintf(stderr, "rep %d: elem %.2f ms, row %.2f ms, map %.2f ms, cpu %.2f ms\n",
				r, elem[r] * 1e3, row[r] * 1e3, map[r] * 1e3, cpu[r] * 1e3);
	}
	printf("\nDevice kernels (libhmm): c[i] = a[i] + b[i] over %llu floats of malloc'd "
	       "arrays,\n%u compute units against %u CPU threads; median of %d.  Ratio: "
	       "baseline / value (1 = as fast as the CPU threads).\n\n",
	       (unsigned long long)nelem, units, units, reps);
	table_head(46, 6);
	line("vector add on CPU threads (baseline)", "ms", median(cpu, reps) * 1e3, -1);
	line("kernel, one item per element, typed ld/st", "ms", median(elem, reps) * 1e3,
	     median(cpu, reps) * 1e3);
	line("kernel, one item per row, kernel_read/write", "ms", median(row, reps) * 1e3,
	     median(cpu, reps) * 1e3);
	line("kernel, one item per row, hmm_kernel_map", "ms", median(map, reps) * 1e3,
	     median(cpu, reps) * 1e3);
	line("first launch (device faults of 3 arrays)", "ms", first * 1e3,
	     median(cpu, reps) * 1e3);
	line("typed access on a TLB hit, per access", "ns",
	     median(elem, reps) * 1e9 * units / (3.0 * (double)nelem), -1);
	close_mirror(dev, m);
	free(a);
	free(b);
	free(c);
	return failures ? 1 : 0;
}
