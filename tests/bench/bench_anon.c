/* SPDX-License-Identifier: MIT */
/*
 * bench_anon.c - migration of anonymous memory (issue 4), each row against
 * a baseline measured in the same run.
 *
 * Usage: bench_anon [-v] [-r REPS] [-m MIB]
 *
 * Rows (median over REPS):
 *  1. memcpy of MIB MiB between two arrays (baseline for 2 and 3);
 *  2. hmm_migrate_to_device of MIB MiB of written anonymous memory;
 *  3. hmm_migrate_to_ram of the same, all at once;
 *  4. a bare userfaultfd round trip per 4 KiB page: a thread touches pages
 *     of a registered range one by one and another places each with
 *     UFFDIO_COPY (baseline for 5);
 *  5. a CPU fault on a page on the device, per page: the same walk over
 *     memory that migrated, each page coming back through the monitor;
 *  6. x[i] += 1 over MIB MiB of doubles on CPU threads (baseline for 7-9);
 *  7. the same as a device kernel with HMM_POLICY_MAP, pages mapped in
 *     place (warm: second launch);
 *  8. its first launch with the array advised HMM_POLICY_MIGRATE: the
 *     faults move it;
 *  9. a warm launch on the array now in device memory.
 * Nothing is asserted: the machine is shared and noisy.  The exit status
 * is 1 only when the benchmark could not run or a result was wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <hmm.h>

#include "bench_common.h"
#include "bench_hmm.h"

const char *const bench_prog = "bench_anon";

void usage(FILE *out)
{
	fprintf(out, "Usage: %s [-v] [-r REPS] [-m MIB]\n", bench_prog);
}

static void line(const char *row, const char *unit, double value, double base, bool higher)
{
	table_row(44, 5, row, unit, value, base, higher);
}

static void add_one(struct hmm_kernel *k, void *arg)
{
	double *x = arg;
	uint64_t i = hmm_kernel_item(k) * 512;
	struct hmm_kernel_span sp = { &x[i], 512 * sizeof(double), true, NULL };
	double *y;

	if (hmm_kernel_map(k, &sp, 1))
		return;
	y = sp.addr;
	for (unsigned j = 0; j < 512; j++)
		y[j] += 1;
}

struct cpu_part {
	double *x;
	size_t from, to;
};

static void *cpu_add(void *arg)
{
	struct cpu_part *c = arg;

	for (size_t i = c->from; i < c->to; i++)
		c->x[i] += 1;
	return NULL;
}

/* x[i] += 1 on two CPU threads, the baseline of the kernels.  Seconds. */
static double run_cpu(double *x, size_t n)
{
	struct cpu_part parts[2] = { { x, 0, n / 2 }, { x, n / 2, n } };
	pthread_t t;
	double t0 = now_s();

	pthread_create(&t, NULL, cpu_add, &parts[0]);
	cpu_add(&parts[1]);
	pthread_join(t, NULL);
	return now_s() - t0;
}

static double run_kernel(struct hmm_mirror *m, double *x, size_t n)
{
	return time_launch(m, n / 512, add_one, x);
}

/* -- the bare userfaultfd round trip */

struct bare {
	int uffd;
	const char *src;
	int stop;
};

static void *bare_server(void *arg)
{
	struct bare *b = arg;

	while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { .fd = b->uffd, .events = POLLIN };
		struct uffd_msg msg;

		if (poll(&p, 1, 10) <= 0 || read(b->uffd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event == UFFD_EVENT_PAGEFAULT) {
			struct uffdio_copy c = {
				.dst = msg.arg.pagefault.address & ~(uint64_t)(PAGE - 1),
				.src = (uint64_t)(uintptr_t)b->src,
				.len = PAGE,
			};
			ioctl(b->uffd, UFFDIO_COPY, &c);
		}
	}
	return NULL;
}

/* Seconds per page for a walk over npages missing pages served by a bare uffd. */
static double bare_round_trip(size_t npages)
{
	struct uffdio_api api = { .api = UFFD_API };
	unsigned char *p = map_anon(npages * PAGE);
	struct bare b = { .src = aligned_alloc(PAGE, PAGE) };
	struct uffdio_register reg = {
		.range = { (uint64_t)(uintptr_t)p, npages * PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	volatile unsigned char sink = 0;
	pthread_t t;
	double t0, t1;

	memset((void *)b.src, 7, PAGE);
	b.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (b.uffd < 0 || ioctl(b.uffd, UFFDIO_API, &api) || ioctl(b.uffd, UFFDIO_REGISTER, &reg))
		die("userfaultfd: %s", strerror(errno));
	pthread_create(&t, NULL, bare_server, &b);
	t0 = now_s();
	for (size_t i = 0; i < npages; i++)
		sink += p[i * PAGE];
	t1 = now_s();
	__atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	if (sink != (unsigned char)(7 * npages))
		failures++;
	close(b.uffd);
	munmap(p, npages * PAGE);
	free((void *)b.src);
	return (t1 - t0) / (double)npages;
}

int main(int argc, char **argv)
{
	double cpy[MAX_REPS], in[MAX_REPS], out[MAX_REPS], bare[MAX_REPS], fault[MAX_REPS];
	double cpu[MAX_REPS], map[MAX_REPS], first[MAX_REPS], warm[MAX_REPS];
	struct hmm_mirror *mirror;
	int reps = 5, opt, err;
	bool verbose = false;
	size_t mib = 64, len, fpages = 1024;
	unsigned char *src, *dst;
	struct hmm_device *dev;

	while ((opt = getopt(argc, argv, "vr:m:h")) != -1) {
		if (opt == 'm')
			mib = (size_t)parse_count(optarg, "-m", 1, 4096);
		else
			common_option(opt, optarg, &reps, &verbose);
	}
	expect_operands(argc, 0);
	len = mib << 20;
	open_mirror(len + (4u << 20), 2, &dev, &mirror);
	src = map_anon(len);
	dst = map_anon(len);
	memset(src, 3, len);
	memset(dst, 4, len);
	for (int r = 0; r < reps; r++) {
		uint64_t moved;
		double t0;
		unsigned char *f;
		volatile unsigned char sink = 0;

		t0 = now_s();
		memcpy(dst, src, len);
		cpy[r] = now_s() - t0;

		t0 = now_s();
		err = hmm_migrate_to_device(dev, src, len, &moved);
		in[r] = now_s() - t0;
		if (err || moved != len / PAGE)
			die("migrate to device: %s, %llu pages", strerror(-err),
			    (unsigned long long)moved);
		t0 = now_s();
		err = hmm_migrate_to_ram(src, len, &moved);
		out[r] = now_s() - t0;
		if (err || moved != len / PAGE || src[len - 1] != 3)
			die("migrate to ram: %s, %llu pages", strerror(-err),
			    (unsigned long long)moved);

		bare[r] = bare_round_trip(fpages);
		f = map_anon(fpages * PAGE);
		memset(f, 5, fpages * PAGE);
		err = hmm_migrate_to_device(dev, f, fpages * PAGE, &moved);
		if (err)
			die("migrate to device: %s", strerror(-err));
		t0 = now_s();
		for (size_t i = 0; i < fpages; i++)
			sink += f[i * PAGE];
		fault[r] = (now_s() - t0) / (double)fpages;
		if (sink != (unsigned char)(5 * fpages))
			failures++;
		munmap(f, fpages * PAGE);

		{
			double *x = (double *)map_anon(len);
			size_t n = len / sizeof(double);

			memset(x, 0, len);
			cpu[r] = run_cpu(x, n);
			run_kernel(mirror, x, n);
			map[r] = run_kernel(mirror, x, n);
			if (x[0] != 3 || x[n - 1] != 3)
				failures++;
			munmap(x, len);
			/* A fresh array: the policy acts on faults only. */
			x = (double *)map_anon(len);
			memset(x, 0, len);
			if (hmm_mirror_advise(mirror, x, len, HMM_POLICY_MIGRATE))
				die("advise: out of memory");
			first[r] = run_kernel(mirror, x, n);
			{
				struct hmm_device_stats st;

				hmm_device_stats(dev, &st);
				if (st.used < len)
					die("the migrating policy left %llu of %zu bytes in host RAM",
					    (unsigned long long)(len - st.used), len);
			}
			warm[r] = run_kernel(mirror, x, n);
			hmm_mirror_advise(mirror, x, len, HMM_POLICY_MAP);
			if (x[0] != 2 || x[n - 1] != 2)
				failures++;
			munmap(x, len);
		}
		if (verbose)
			fprintf(stderr, "rep %d: memcpy %.1f ms, to device %.1f ms, to ram %.1f ms, "
				"bare uffd %.2f us, fault-back %.2f us\n", r, cpy[r] * 1e3,
				in[r] * 1e3, out[r] * 1e3, bare[r] * 1e6, fault[r] * 1e6);
	}
	printf("\nMigration of anonymous memory (libhmm): %zu MiB, one DMA engine; median of "
	       "%d.\nRatio: value / baseline for bandwidths, baseline / value for times "
	       "(1 = as fast as the baseline).\n\n", mib, reps);
	table_head(44, 5);
	line("memcpy (baseline)", "MB/s", (double)len / median(cpy, reps) / 1e6, -1, true);
	line("hmm_migrate_to_device", "MB/s", (double)len / median(in, reps) / 1e6,
	     (double)len / median(cpy, reps) / 1e6, true);
	line("hmm_migrate_to_ram", "MB/s", (double)len / median(out, reps) / 1e6,
	     (double)len / median(cpy, reps) / 1e6, true);
	line("bare userfaultfd round trip (baseline)", "us", median(bare, reps) * 1e6, -1, false);
	line("CPU fault on a device page, brought back", "us", median(fault, reps) * 1e6,
	     median(bare, reps) * 1e6, false);
	line("x[i] += 1 on 2 CPU threads (baseline)", "ms", median(cpu, reps) * 1e3, -1, false);
	line("kernel, pages mapped in place (POLICY_MAP)", "ms", median(map, reps) * 1e3,
	     median(cpu, reps) * 1e3, false);
	line("first kernel with POLICY_MIGRATE (moves all)", "ms", median(first, reps) * 1e3,
	     median(cpu, reps) * 1e3, false);
	line("kernel on the array in device memory", "ms", median(warm, reps) * 1e3,
	     median(cpu, reps) * 1e3, false);
	munmap(src, len);
	munmap(dst, len);
	close_mirror(dev, mirror);
	return failures ? 1 : 0;
}
