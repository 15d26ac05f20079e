/* SPDX-License-Identifier: MIT */
/*
 * bench_mirror.c - a device using the process's memory through its mirror
 * (issue 4, item 10), each row against a baseline measured in the same run.
 *
 * Usage: bench_mirror [-v] [-r REPS] [-m MIB] [-u UNITS] [-n N]
 *
 * Rows (median over REPS).  A comparison has the same number of threads,
 * UNITS, on both sides: the device has UNITS compute units.
 *  1. first touch by the CPU: UNITS threads write one word in each page of
 *     MIB MiB of fresh anonymous memory, each its share (baseline for 2, 3);
 *  2. first touch by the device: a kernel writes one word in each page of
 *     another fresh MIB MiB, one work item per page: device faults fill
 *     the mirror's page table;
 *  3. the mechanism under 2: hmm_range_fault with HMM_PFN_REQ_FAULT |
 *     HMM_PFN_REQ_WRITE over fresh MIB MiB, one call per thread on its
 *     share (REQ_FAULT alone maps the shared zero page, not the memory a
 *     write needs);
 *  4. /proc/self/pagemap of MIB MiB of populated memory: 8 bytes per page
 *     in one pread (baseline for 5);
 *  5. a snapshot of the same range: hmm_range_fault with no fault asked,
 *     every page checked VALID and WRITE;
 *  6. munmap of MIB MiB of populated memory by syscall(SYS_munmap), around
 *     libhmm (baseline for 7);
 *  7. the same through libhmm's interposed munmap, the device mapping none
 *     of it: the interposer's cost (baseline for 8);
 *  8. munmap of the memory of 2, every page in the device's page table: the
 *     cost of the invalidation;
 *  9. the matrix product of examples/matmul.c, C = A B for N x N doubles,
 *     on UNITS CPU threads taking rows (baseline for 10, 11);
 * 10. the example's kernel, warm (its second launch, every page already
 *     mapped): the rows of A and C and all of B mapped for direct use with
 *     hmm_kernel_map, falling back to 11 when a span is scattered in device
 *     memory (never here: malloc'd memory);
 * 11. the example's fallback alone, warm: a row of A read with
 *     hmm_kernel_read, typed loads of B and typed stores of C, a library
 *     call per element.
 * Results are checked (the words written, the pfns and pagemap flags, the
 * mirror's counters, the three products equal); the exit status is 1 only
 * when the benchmark could not run or a result was wrong.  Nothing is
 * asserted of times: the machine is shared and noisy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <hmm.h>

#include "bench_common.h"
#include "bench_hmm.h"
#include "../../examples/matmul_kernel.h"

const char *const bench_prog = "bench_mirror";

#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))
/*
 * Left untouched after each fresh range: a device fault maps ahead of the
 * faulting page, and must not map the neighbouring range, which may be the
 * one measured as unmirrored.
 */
#define TAIL ((size_t)2 << 20)

void usage(FILE *out)
{
	fprintf(out, "Usage: %s [-v] [-r REPS] [-m MIB] [-u UNITS] [-n N]\n", bench_prog);
}

static void line(const char *row, const char *unit, double value, double base, bool higher)
{
	table_row(46, 5, row, unit, value, base, higher);
}

/* -- first touch */

struct touch {
	uint64_t *p;
	size_t npages;
};

/* Thread i of n writes its share: page k gets k + 1 in its first word. */
static void cpu_touch(void *arg, unsigned i, unsigned n)
{
	struct touch *t = arg;

	for (size_t k = t->npages * i / n; k < t->npages * (i + 1) / n; k++)
		t->p[k * WORDS_PER_PAGE] = k + 1;
}

static void kernel_touch(struct hmm_kernel *k, void *arg)
{
	uint64_t *p = arg, page = hmm_kernel_item(k);

	hmm_st_u64(k, &p[page * WORDS_PER_PAGE], page + 1);
}

static void check_touched(const uint64_t *p, size_t npages, const char *what)
{
	for (size_t k = 0; k < npages; k++) {
		if (p[k * WORDS_PER_PAGE] != k + 1) {
			failures++;
			fprintf(stderr, "%s: %s: page %zu reads %llu\n", bench_prog, what, k,
				(unsigned long long)p[k * WORDS_PER_PAGE]);
			return;
		}
	}
}

/* -- range fault, with a subscription of our own over the range */

static bool on_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			  uint64_t cur_seq)
{
	(void)r;
	hmm_interval_set_seq(sub, cur_seq);
	return true;
}

static const struct hmm_interval_notifier_ops sub_ops = { .invalidate = on_invalidate };

struct faulting {
	struct hmm_interval_notifier *sub;
	uint64_t start;
	size_t npages;
	uint64_t *pfns;
	uint64_t flags;
	int err; /* atomic: the first error */
};

/* hmm_range_fault of npages from start with the defaults flags, again while -EBUSY. */
static int range_fault(struct faulting *f, uint64_t start, size_t npages, uint64_t *pfns)
{
	struct hmm_range r = {
		.notifier = f->sub,
		.start = start,
		.end = start + npages * PAGE,
		.hmm_pfns = pfns,
		.default_flags = f->flags,
	};
	int err;

	do {
		r.notifier_seq = hmm_interval_read_begin(f->sub);
		err = hmm_range_fault(&r);
	} while (err == -EBUSY);
	return err;
}

static void range_fault_part(void *arg, unsigned i, unsigned n)
{
	struct faulting *f = arg;
	size_t from = f->npages * i / n, to = f->npages * (i + 1) / n;
	int zero = 0, err = range_fault(f, f->start + from * PAGE, to - from, f->pfns + from);

	if (err)
		__atomic_compare_exchange_n(&f->err, &zero, err, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED);
}

/* Every page of the range must be VALID and WRITE, at its own address. */
static void check_pfns(const struct faulting *f, const char *what)
{
	if (f->err) {
		failures++;
		fprintf(stderr, "%s: %s: %s\n", bench_prog, what, strerror(-f->err));
		return;
	}
	for (size_t k = 0; k < f->npages; k++) {
		uint64_t pfn = f->pfns[k];

		if ((pfn & (HMM_PFN_VALID | HMM_PFN_WRITE)) != (HMM_PFN_VALID | HMM_PFN_WRITE) ||
		    (uint64_t)(uintptr_t)hmm_pfn_to_addr(pfn) != f->start + k * PAGE) {
			failures++;
			fprintf(stderr, "%s: %s: page %zu has pfn %#llx\n", bench_prog, what, k,
				(unsigned long long)pfn);
			return;
		}
	}
}

/* One pread of /proc/self/pagemap for npages from p; every page must be present.  Seconds. */
static double read_pagemap(const void *p, size_t npages, uint64_t *words)
{
	size_t want = npages * sizeof(*words), got = 0;
	double t0 = now_s();
	int fd = xopen("/proc/self/pagemap", O_RDONLY);

	while (got < want) {
		ssize_t n = pread(fd, (char *)words + got, want - got,
				  (off_t)((uintptr_t)p / PAGE * sizeof(*words) + got));

		if (n <= 0)
			die("read /proc/self/pagemap: %s", n ? strerror(errno) : "end of file");
		got += (size_t)n;
	}
	xclose(fd, "/proc/self/pagemap");
	t0 = now_s() - t0;
	for (size_t k = 0; k < npages; k++) {
		if (!(words[k] >> 63)) {
			failures++;
			fprintf(stderr, "%s: pagemap: page %zu not present\n", bench_prog, k);
			break;
		}
	}
	return t0;
}

/* -- munmap */

static struct hmm_mirror_stats mirror_stats(struct hmm_mirror *m)
{
	struct hmm_mirror_stats st;

	if (hmm_mirror_stats(m, &st))
		die("hmm_mirror_stats failed");
	return st;
}

/*
 * munmap of p (len bytes and the tail) through libhmm, checked against the
 * mirror's counters: one invalidation at least (the interposer ran) and
 * exactly the pages the device mapped there dropped.  Seconds.
 */
static double unmap(struct hmm_mirror *m, void *p, size_t len, uint64_t mapped)
{
	struct hmm_mirror_stats before = mirror_stats(m), after;
	double t0 = now_s();

	if (munmap(p, len + TAIL))
		die("munmap: %s", strerror(errno));
	t0 = now_s() - t0;
	after = mirror_stats(m);
	if (after.invalidations == before.invalidations ||
	    after.pages_invalidated - before.pages_invalidated != mapped) {
		failures++;
		fprintf(stderr, "%s: munmap: %llu invalidations dropped %llu device pages, "
			"expected %llu\n", bench_prog,
			(unsigned long long)(after.invalidations - before.invalidations),
			(unsigned long long)(after.pages_invalidated - before.pages_invalidated),
			(unsigned long long)mapped);
	}
	return t0;
}

/* -- the matrix product of examples/matmul.c (its kernel, matmul_kernel.h), n at run time */

/* Thread t of nt: its rows, the row of A copied first as the kernel reads it. */
static void cpu_matmul(void *arg, unsigned t, unsigned nt)
{
	struct matmul_operands *o = arg;
	double row[MATMUL_MAX_N];

	for (size_t i = (size_t)o->n * t / nt; i < (size_t)o->n * (t + 1) / nt; i++) {
		memcpy(row, &o->a[i * o->n], o->n * sizeof(double));
		matmul_row_product(row, o->b, &o->c[i * o->n], o->n);
	}
}

static double *matrix(unsigned n)
{
	size_t bytes = ((size_t)n * n * sizeof(double) + PAGE - 1) / PAGE * PAGE;
	double *m = aligned_alloc(PAGE, bytes);

	if (!m)
		die("out of memory");
	memset(m, 0, bytes);
	return m;
}

int main(int argc, char **argv)
{
	double cpu_first[MAX_REPS], dev_first[MAX_REPS], rf_first[MAX_REPS];
	double pagemap[MAX_REPS], snap[MAX_REPS];
	double raw_unmap[MAX_REPS], unmap_plain[MAX_REPS], unmap_mirrored[MAX_REPS];
	double mm_cpu[MAX_REPS], mm_typed[MAX_REPS], mm_mapped[MAX_REPS];
	size_t mib = 1024, len, npages;
	unsigned units = 2, n = 256;
	struct matmul_operands cpu_mm, typed_mm, mapped_mm;
	struct hmm_device *dev;
	struct hmm_mirror *m;
	uint64_t *pfns, *words;
	int reps = 5, opt, err;
	bool verbose = false;
	char row[3][64];

	while ((opt = getopt(argc, argv, "vr:m:u:n:h")) != -1) {
		switch (opt) {
		case 'm': mib = (size_t)parse_count(optarg, "-m", 1, 16384); break;
		case 'u': units = (unsigned)parse_count(optarg, "-u", 1, HMM_MAX_COMPUTE_UNITS); break;
		case 'n': n = (unsigned)parse_count(optarg, "-n", 16, MATMUL_MAX_N); break;
		default: common_option(opt, optarg, &reps, &verbose); break;
		}
	}
	expect_operands(argc, 0);
	len = mib << 20;
	npages = len / PAGE;
	open_mirror(1 << 20, units, &dev, &m);
	time_launch(m, 0, kernel_touch, NULL); /* starts the compute units */
	pfns = map_anon(npages * sizeof(*pfns));
	words = map_anon(npages * sizeof(*words));
	memset(pfns, 0, npages * sizeof(*pfns));
	memset(words, 0, npages * sizeof(*words));

	cpu_mm = (struct matmul_operands){ matrix(n), matrix(n), matrix(n), n };
	typed_mm = (struct matmul_operands){ cpu_mm.a, cpu_mm.b, matrix(n), n };
	mapped_mm = (struct matmul_operands){ cpu_mm.a, cpu_mm.b, matrix(n), n };
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			((double *)cpu_mm.a)[i * n + j] = (double)((i + j) % 7);
			((double *)cpu_mm.b)[i * n + j] = (double)((i * j) % 5);
		}
	}
	/* Warm: every page of the matrices mapped by the device. */
	time_launch(m, n, matmul_row_typed, &typed_mm);
	time_launch(m, n, matmul_row, &mapped_mm);

	for (int r = 0; r < reps; r++) {
		struct touch cpu = { map_anon(len + TAIL), npages };
		struct touch devt = { map_anon(len + TAIL), npages };
		struct faulting f = { .npages = npages, .pfns = pfns,
				      .flags = HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE };
		uint64_t mapped = 0;

		/* 1, 2: the two first touches, in turn first. */
		for (int k = 0; k < 2; k++) {
			if ((r + k) % 2 == 0) {
				cpu_first[r] = time_threads(units, cpu_touch, &cpu);
			} else {
				mapped = mirror_stats(m).mapped_pages;
				dev_first[r] = time_launch(m, npages, kernel_touch, devt.p);
				mapped = mirror_stats(m).mapped_pages - mapped;
			}
		}
		check_touched(cpu.p, npages, "CPU first touch");
		check_touched(devt.p, npages, "device first touch");
		if (mapped < npages) {
			failures++;
			fprintf(stderr, "%s: the device mapped %llu pages of %zu\n", bench_prog,
				(unsigned long long)mapped, npages);
		}
		/* 7, 8: munmap with and without device pages, in turn first. */
		for (int k = 0; k < 2; k++) {
			if ((r + k) % 2 == 0)
				unmap_plain[r] = unmap(m, cpu.p, len, 0);
			else
				unmap_mirrored[r] = unmap(m, devt.p, len, mapped);
		}

		/* 3: range fault of fresh memory; 4, 5: pagemap and snapshot of it. */
		f.start = (uint64_t)(uintptr_t)map_anon(len + TAIL);
		err = hmm_interval_notifier_insert(f.start, len, &sub_ops, NULL, &f.sub);
		if (err)
			die("hmm_interval_notifier_insert: %s", strerror(-err));
		rf_first[r] = time_threads(units, range_fault_part, &f);
		check_pfns(&f, "range fault");
		for (int k = 0; k < 2; k++) {
			if ((r + k) % 2 == 0) {
				pagemap[r] = read_pagemap((void *)(uintptr_t)f.start, npages, words);
			} else {
				double t0;

				f.flags = 0;
				memset(pfns, 0, npages * sizeof(*pfns));
				t0 = now_s();
				f.err = range_fault(&f, f.start, npages, pfns);
				snap[r] = now_s() - t0;
				check_pfns(&f, "snapshot");
			}
		}
		hmm_interval_notifier_remove(f.sub);
		/* 6: around libhmm, safe here: the device maps none of it. */
		{
			double t0 = now_s();

			if (syscall(SYS_munmap, (void *)(uintptr_t)f.start, len + TAIL))
				die("munmap: %s", strerror(errno));
			raw_unmap[r] = now_s() - t0;
		}

		/* 9-11, in turn first. */
		for (int k = 0; k < 3; k++) {
			switch ((r + k) % 3) {
			case 0: mm_cpu[r] = time_threads(units, cpu_matmul, &cpu_mm); break;
			case 1: mm_typed[r] = time_launch(m, n, matmul_row_typed, &typed_mm); break;
			case 2: mm_mapped[r] = time_launch(m, n, matmul_row, &mapped_mm); break;
			}
		}
		if (memcmp(cpu_mm.c, typed_mm.c, (size_t)n * n * sizeof(double)) ||
		    memcmp(cpu_mm.c, mapped_mm.c, (size_t)n * n * sizeof(double))) {
			failures++;
			fprintf(stderr, "%s: the products differ\n", bench_prog);
		}
		if (verbose)
			fprintf(stderr, "rep %d: first touch cpu %.1f ms, kernel %.1f ms, range fault "
				"%.1f ms; pagemap %.2f ms, snapshot %.2f ms; munmap raw %.1f ms, "
				"plain %.1f ms, mirrored %.1f ms; matmul cpu %.2f ms, typed %.2f ms, "
				"mapped %.2f ms\n", r, cpu_first[r] * 1e3, dev_first[r] * 1e3,
				rf_first[r] * 1e3, pagemap[r] * 1e3, snap[r] * 1e3, raw_unmap[r] * 1e3,
				unmap_plain[r] * 1e3, unmap_mirrored[r] * 1e3, mm_cpu[r] * 1e3,
				mm_typed[r] * 1e3, mm_mapped[r] * 1e3);
	}

	printf("\nMirroring (libhmm): %zu MiB, %u CPU threads against %u compute units; "
	       "median of %d.\nRatio: value / baseline for rates, baseline / value for times "
	       "(1 = as fast as the baseline).\nTargets: first touch and munmap within 1.5x "
	       "(0.667 or more), the matrix product 0.9 or more.\n\n", mib, units, units, reps);
	table_head(46, 5);
#define RATE(v) ((double)npages / median(v, reps))
	snprintf(row[0], sizeof(row[0]), "first touch, %u CPU thread%s (baseline)", units,
		 units > 1 ? "s" : "");
	snprintf(row[1], sizeof(row[1]), "first touch by a kernel, %u unit%s", units,
		 units > 1 ? "s" : "");
	snprintf(row[2], sizeof(row[2]), "hmm_range_fault REQ_FAULT|WRITE, %u thread%s", units,
		 units > 1 ? "s" : "");
	line(row[0], "pg/s", RATE(cpu_first), -1, true);
	line(row[1], "pg/s", RATE(dev_first), RATE(cpu_first), true);
	line(row[2], "pg/s", RATE(rf_first), RATE(cpu_first), true);
	line("pread of /proc/self/pagemap (baseline)", "ms", median(pagemap, reps) * 1e3, -1,
	     false);
	line("snapshot: hmm_range_fault, no fault asked", "ms", median(snap, reps) * 1e3,
	     median(pagemap, reps) * 1e3, false);
	line("munmap by syscall(SYS_munmap) (baseline)", "ms", median(raw_unmap, reps) * 1e3, -1,
	     false);
	line("munmap through libhmm, nothing mirrored", "ms", median(unmap_plain, reps) * 1e3,
	     median(raw_unmap, reps) * 1e3, false);
	line("munmap, every page mapped by the device", "ms", median(unmap_mirrored, reps) * 1e3,
	     median(unmap_plain, reps) * 1e3, false);
	snprintf(row[0], sizeof(row[0]), "matmul %ux%u, %u CPU thread%s (baseline)", n, n, units,
		 units > 1 ? "s" : "");
	snprintf(row[1], sizeof(row[1]), "examples/matmul.c kernel, %u unit%s, warm", units,
		 units > 1 ? "s" : "");
	line(row[0], "ms", median(mm_cpu, reps) * 1e3, -1, false);
	line(row[1], "ms", median(mm_mapped, reps) * 1e3, median(mm_cpu, reps) * 1e3, false);
	line("its fallback alone: typed loads, warm", "ms", median(mm_typed, reps) * 1e3,
	     median(mm_cpu, reps) * 1e3, false);
#undef RATE
	close_mirror(dev, m);
	free((void *)cpu_mm.a);
	free((void *)cpu_mm.b);
	free(cpu_mm.c);
	free(typed_mm.c);
	free(mapped_mm.c);
	munmap(pfns, npages * sizeof(*pfns));
	munmap(words, npages * sizeof(*words));
	return exit_status("results were wrong");
}
