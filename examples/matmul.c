/* SPDX-License-Identifier: MIT */
/*
 * matmul - the same matrix product on a device, both ways.
 *
 * 1. Explicit device buffers and copies, as without HMM: the program stages
 *    A and B in buffers it moves into device memory (the copy to the
 *    device), runs the kernel on those buffers, and brings the result's
 *    buffer back (the copy from the device).
 * 2. One launch on the plain malloc'd A, B and C: the device faults what it
 *    needs through its page table and no copy is written by hand.
 * Prints both results' checksums (the same) and each way's counters.
 *
 * With a directory of an hmmfs mount as argument, the matrices live in a
 * file there instead (mapped shared): the file is first moved to the
 * mount's device 0 (hmm_file_migrate), then that very device, attached to
 * this process (hmm_device_attach), runs the product on the mapped
 * pointers, reading A and B where they are, in its own memory: no page
 * comes back to host RAM.  Prints the checksum and the file's counters.
 *
 * The device kernel is in matmul_kernel.h, next to this file.
 *
 * Build: cc matmul.c $(pkg-config --cflags --libs libhmm)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <hmm.h>

#include "matmul_kernel.h"

#define N 128
#define PAGE 4096u
#define BYTES ((size_t)N * N * sizeof(double))

static double checksum(const double *c)
{
	double s = 0;

	for (size_t i = 0; i < (size_t)N * N; i++)
		s += c[i] * (double)(i % 13 + 1);
	return s;
}

static double *matrix(void)
{
	double *m = aligned_alloc(PAGE, BYTES);

	if (!m) {
		fprintf(stderr, "matmul: out of memory\n");
		exit(1);
	}
	return m;
}

static void counters(const char *how, struct hmm_device *dev, struct hmm_mirror *m,
		     const struct hmm_mirror_stats *before, const struct hmm_device_stats *dbefore)
{
	struct hmm_mirror_stats st;
	struct hmm_device_stats ds;

	hmm_mirror_stats(m, &st);
	hmm_device_stats(dev, &ds);
	printf("%s: device faults %llu, pages migrated to the device %llu, back %llu\n", how,
	       (unsigned long long)(st.faults - before->faults),
	       (unsigned long long)(ds.pages_in - dbefore->pages_in),
	       (unsigned long long)(ds.pages_out - dbefore->pages_out));
}

static int check(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "matmul: %s: %s\n", what, strerror(-err));
		exit(1);
	}
	return 0;
}

/* The product on matrices in a file of an hmmfs mount, by its device 0. */
static int in_file(const char *dir, const double *a, const double *b, const double *want)
{
	char path[4096];
	struct hmm_file_stat fs;
	struct hmm_device *dev;
	struct hmm_mirror *m;
	struct matmul_operands o;
	double *f;
	int fd;

	snprintf(path, sizeof(path), "%s/matrices", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 3 * BYTES)) {
		perror(path);
		return 1;
	}
	f = mmap(NULL, 3 * BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (f == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memcpy(f, a, BYTES);
	memcpy(f + N * N, b, BYTES);
	check(hmm_file_migrate(fd, 0, 0, 0, NULL), "move the file to the mount's device 0");
	check(hmm_file_stat(fd, &fs), "file counters");
	printf("hmmfs file: %llu KiB on device 0 before the launch\n",
	       (unsigned long long)(fs.device_bytes[0] >> 10));
	check(hmm_device_attach(dir, 0, &dev), "attach to the mount's device 0");
	check(hmm_mirror_create(dev, &m), "mirror of the mount's device 0");
	o = (struct matmul_operands){ f, f + N * N, f + 2 * N * N, N };
	check(hmm_launch(m, N, matmul_row, &o), "launch on the hmmfs file");
	check(hmm_file_stat(fd, &fs), "file counters");
	printf("hmmfs file: %llu KiB on device 0 after the launch, %llu pages brought back\n",
	       (unsigned long long)(fs.device_bytes[0] >> 10), (unsigned long long)fs.cpu_faults);
	printf("hmmfs file: checksum %.0f\n", checksum(f + 2 * N * N));
	printf("same result: %s\n", !memcmp(f + 2 * N * N, want, BYTES) ? "yes" : "NO");
	hmm_mirror_destroy(m);
	hmm_device_destroy(dev);
	munmap(f, 3 * BYTES);
	close(fd);
	unlink(path);
	return 0;
}

int main(int argc, char **argv)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 4 << 20, .numa_node = -1, .compute_units = 2 };
	double *a = matrix(), *b = matrix(), *c1 = matrix(), *c2 = matrix();
	double *da = matrix(), *db = matrix(), *dc = matrix();
	struct hmm_mirror_stats st;
	struct hmm_device_stats ds;
	struct hmm_device *dev;
	struct hmm_mirror *m;
	struct matmul_operands o;
	double s1, s2;
	bool same;

	for (unsigned i = 0; i < N; i++) {
		for (unsigned j = 0; j < N; j++) {
			a[i * N + j] = (double)((i + j) % 7);
			b[i * N + j] = (double)((i * j) % 5);
		}
	}
	check(hmm_device_create(&cfg, &dev), "device");
	check(hmm_mirror_create(dev, &m), "mirror");

	/* 1. Explicit buffers: stage, copy to the device, run, copy back. */
	hmm_mirror_stats(m, &st);
	hmm_device_stats(dev, &ds);
	memcpy(da, a, BYTES);
	memcpy(db, b, BYTES);
	check(hmm_migrate_to_device(dev, da, BYTES, NULL), "copy A to the device");
	check(hmm_migrate_to_device(dev, db, BYTES, NULL), "copy B to the device");
	check(hmm_migrate_to_device(dev, dc, BYTES, NULL), "allocate C on the device");
	o = (struct matmul_operands){ da, db, dc, N };
	check(hmm_launch(m, N, matmul_row, &o), "launch on device buffers");
	check(hmm_migrate_to_ram(dc, BYTES, NULL), "copy C back");
	memcpy(c1, dc, BYTES);
	s1 = checksum(c1);
	printf("explicit device buffers: checksum %.0f\n", s1);
	counters("explicit device buffers", dev, m, &st, &ds);

	/* 2. The plain pointers. */
	hmm_mirror_stats(m, &st);
	hmm_device_stats(dev, &ds);
	o = (struct matmul_operands){ a, b, c2, N };
	check(hmm_launch(m, N, matmul_row, &o), "launch on malloc'd memory");
	s2 = checksum(c2);
	printf("plain malloc'd pointers: checksum %.0f\n", s2);
	counters("plain malloc'd pointers", dev, m, &st, &ds);

	same = !memcmp(c1, c2, BYTES);
	printf("same result: %s\n", same ? "yes" : "NO");
	if (argc > 1 && in_file(argv[1], a, b, c1))
		same = false;
	hmm_mirror_destroy(m);
	hmm_device_destroy(dev);
	free(a);
	free(b);
	free(c1);
	free(c2);
	free(da);
	free(db);
	free(dc);
	return same ? 0 : 1;
}
