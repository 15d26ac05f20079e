/* SPDX-License-Identifier: MIT */
/*
 * test_dmirror.c - libhmm_dmirror.so, the kernel's HMM test driver in user
 * space: this program knows nothing of libhmm.  It opens /dev/hmm_dmirrorN
 * and uses the HMM_DMIRROR_* ioctls of hmm_dmirror.h, as a program written
 * for the kernel's lib/test_hmm.c does, and checks what the driver would
 * answer: data, errno values, cpages and faults, snapshot bytes.
 *
 * It runs itself again under LD_PRELOAD=libhmm_dmirror.so (behind the
 * sanitizer's runtime, which must come first) when started without it;
 * DMIRROR_SHIM names the shim at build time.  Run bare (HMM_DMIRROR_TEST_BARE=1)
 * against a kernel with the test_hmm module loaded, it checks the module
 * instead.
 */
#define _GNU_SOURCE
#include <hmm_dmirror.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL
#define NPAGES 1024UL /* 4 MiB, as the kernel's tests */

/* ------------------------------------------------- running under the shim */

static int find_runtime(struct dl_phdr_info *info, size_t size, void *arg)
{
	const char *name = info->dlpi_name;

	(void)size;
	if (name && (strstr(name, "/libasan.so") || strstr(name, "/libtsan.so"))) {
		snprintf(arg, 512, "%s ", name);
		return 1;
	}
	return 0;
}

__attribute__((constructor)) static void under_the_shim(void)
{
	char preload[1024], runtime[512] = "";
	char *argv[256];
	FILE *f;
	int argc = 0;
	static char args[1 << 16];
	size_t n;

	if (getenv("HMM_DMIRROR_TEST_BARE") || getenv("HMM_DMIRROR_TEST_SHIMMED"))
		return;
	dl_iterate_phdr(find_runtime, runtime);
	snprintf(preload, sizeof(preload), "%s%s", runtime, DMIRROR_SHIM);
	setenv("LD_PRELOAD", preload, 1);
	setenv("HMM_DMIRROR_TEST_SHIMMED", "1", 1);
	f = fopen("/proc/self/cmdline", "re");
	if (!f)
		abort();
	n = fread(args, 1, sizeof(args) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n && argc < 255; i += strlen(&args[i]) + 1)
		argv[argc++] = &args[i];
	argv[argc] = NULL;
	execv("/proc/self/exe", argv);
	perror("test_dmirror: exec under libhmm_dmirror.so");
	abort();
}

/* ------------------------------------------------------------ helpers */

struct buffer {
	void *ptr;    /* the process's memory the device uses */
	void *mirror; /* where the device's view goes */
	size_t npages;
	uint64_t cpages, faults;
};

static int dev_open(unsigned n)
{
	char path[32];
	int fd;

	snprintf(path, sizeof(path), "/dev/hmm_dmirror%u", n);
	fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	return fd;
}

/* One command over npages of b; 0 or -errno.  cpages and faults as written back. */
static int dcmd(int fd, unsigned long request, struct buffer *b, uint64_t npages)
{
	struct hmm_dmirror_cmd c = { .addr = (uintptr_t)b->ptr, .ptr = (uintptr_t)b->mirror,
				     .npages = npages, .cpages = 777, .faults = 777 };
	int rc;

	do {
		rc = ioctl(fd, request, &c);
	} while (rc && errno == EINTR);
	if (rc)
		return -errno;
	b->cpages = c.cpages;
	b->faults = c.faults;
	return 0;
}

static struct buffer *buffer_new(size_t npages, int prot, int flags)
{
	struct buffer *b = calloc(1, sizeof(*b));

	cr_assert(b);
	b->npages = npages;
	b->ptr = mmap(NULL, npages * PS, prot, flags | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(b->ptr, MAP_FAILED);
	b->mirror = malloc(npages * PS);
	cr_assert(b->mirror);
	return b;
}

static void buffer_free(struct buffer *b)
{
	munmap(b->ptr, b->npages * PS);
	free(b->mirror);
	free(b);
}

static void fill_index(int *p, size_t npages)
{
	for (size_t i = 0; i < npages * PS / sizeof(int); i++)
		p[i] = (int)i;
}

static void expect_index(const int *p, size_t npages, int plus, const char *what)
{
	for (size_t i = 0; i < npages * PS / sizeof(int); i++)
		if (p[i] != (int)i + plus)
			cr_assert_fail("%s: int %zu is %d, not %d", what, i, p[i], (int)i + plus);
}

TestSuite(dmirror, .timeout = 120);

/* ------------------------------------------------------------ scenarios */

/* open_close */
Test(dmirror, every_device_opens_and_closes_and_others_do_not_exist)
{
	for (unsigned n = 0; n < 4; n++)
		cr_assert_eq(close(dev_open(n)), 0);
	cr_assert_eq(open("/dev/hmm_dmirror4", O_RDWR), -1);
	cr_assert_eq(errno, ENOENT);
}

/* anon_read: faults 1 the first time, 0 the second */
Test(dmirror, a_device_read_faults_once_then_reads_from_its_page_table)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	cr_assert_eq(b->faults, 1);
	expect_index(b->mirror, NPAGES, 0, "read");
	memset(b->mirror, 0, NPAGES * PS);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, NPAGES), 0);
	cr_assert_eq(b->faults, 0);
	expect_index(b->mirror, NPAGES, 0, "second read");
	buffer_free(b);
	close(fd);
}

/* anon_read_prot */
Test(dmirror, reading_prot_none_memory_is_efault_and_writes_nothing_back)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES);
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_NONE), 0);
	memset(b->mirror, 0xa5, NPAGES * PS);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, NPAGES), -EFAULT);
	for (size_t i = 0; i < NPAGES * PS; i++)
		cr_assert_eq(((unsigned char *)b->mirror)[i], 0xa5);
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_READ), 0);
	expect_index(b->ptr, NPAGES, 0, "the memory itself");
	buffer_free(b);
	close(fd);
}

/* anon_write and anon_write_prot */
Test(dmirror, a_write_to_read_only_memory_is_eperm_and_works_after_mprotect)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ, MAP_PRIVATE);

	/* The device reads the zero page first, as the kernel's test does. */
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, 1), 0);
	cr_assert_eq(b->faults, 1);
	fill_index(b->mirror, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_WRITE, b, NPAGES), -EPERM);
	for (size_t i = 0; i < NPAGES * PS / sizeof(int); i++)
		cr_assert_eq(((int *)b->ptr)[i], 0, "the write changed int %zu", i);
	cr_assert_eq(mprotect(b->ptr, NPAGES * PS, PROT_READ | PROT_WRITE), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_WRITE, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	cr_assert_eq(b->faults, 1);
	expect_index(b->ptr, NPAGES, 0, "after the write");
	buffer_free(b);
	close(fd);
}

/* migrate, snapshot of migrated pages, migrate back */
Test(dmirror, migration_moves_pages_to_the_device_and_back)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct buffer s = { b->ptr, malloc(NPAGES), NPAGES, 0, 0 };
	unsigned char *bytes = s.mirror;

	fill_index(b->ptr, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	expect_index(b->mirror, NPAGES, 0, "what the device read back");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_SNAPSHOT, &s, NPAGES), 0);
	cr_assert_eq(s.cpages, NPAGES);
	for (size_t i = 0; i < NPAGES; i++)
		cr_assert_eq(bytes[i], HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
			     "page %zu: %#x", i, bytes[i]);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_SNAPSHOT, &s, NPAGES), 0);
	for (size_t i = 0; i < NPAGES; i++)
		cr_assert_eq(bytes[i], HMM_DMIRROR_PROT_WRITE, "page %zu: %#x", i, bytes[i]);
	expect_index(b->ptr, NPAGES, 0, "back in host RAM");
	free(s.mirror);
	buffer_free(b);
	close(fd);
}

/* migrate_fault: the CPU brings half back, then migrate again */
Test(dmirror, pages_a_cpu_read_brought_back_migrate_again)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES);
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, NPAGES), 0);
		cr_assert_eq(b->cpages, NPAGES);
		expect_index(b->mirror, NPAGES, 0, "the device's copy");
		expect_index(b->ptr, NPAGES / 2, 0, "the CPU's read of the first half");
	}
	buffer_free(b);
	close(fd);
}

/* migrate_shared */
Test(dmirror, shared_anonymous_memory_does_not_migrate)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_SHARED);

	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, NPAGES), -ENOENT);
	buffer_free(b);
	close(fd);
}

/* migrate_anon_huge_err, in small: FAIL_ALLOC makes one allocation fail */
Test(dmirror, fail_alloc_fails_one_page_once)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(8, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, 8);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_FLAGS, b, HMM_DMIRROR_FLAG_FAIL_ALLOC), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, 8), -ENOENT,
		     "the page whose allocation failed stayed in host RAM");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, 8), 0, "the flag was used up");
	expect_index(b->mirror, 8, 0, "the device's copy");
	expect_index(b->ptr, 8, 0, "the CPU's");
	buffer_free(b);
	close(fd);
}

/* snapshot (one device): hole, PROT_NONE, zero page, read-only, writable, device page */
Test(dmirror, a_snapshot_tells_each_kind_of_page)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(6, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct buffer s = { b->ptr, malloc(6), 6, 0, 0 }, one = { 0 };
	unsigned char *p = b->ptr, *bytes = s.mirror;
	volatile unsigned char sink;

	cr_assert_eq(munmap(p, PS), 0);                           /* 0: hole */
	cr_assert_eq(mprotect(p + PS, PS, PROT_NONE), 0);         /* 1: PROT_NONE */
	sink = p[2 * PS];                                         /* 2: zero page */
	(void)sink;
	p[3 * PS] = 1;                                            /* 3: read-only */
	cr_assert_eq(mprotect(p + 3 * PS, PS, PROT_READ), 0);
	p[4 * PS] = 1;                                            /* 4: writable */
	p[5 * PS] = 1;                                            /* 5: on the device */
	one.ptr = p + 5 * PS;
	one.mirror = malloc(PS);
	one.npages = 1;
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, &one, 1), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_SNAPSHOT, &s, 6), 0);
	cr_assert_eq(bytes[0], HMM_DMIRROR_PROT_ERROR);
	cr_assert_eq(bytes[1], HMM_DMIRROR_PROT_ERROR);
	cr_assert_eq(bytes[2], HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
	cr_assert_eq(bytes[3], HMM_DMIRROR_PROT_READ);
	cr_assert_eq(bytes[4], HMM_DMIRROR_PROT_WRITE);
	cr_assert_eq(bytes[5], HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
	free(one.mirror);
	free(s.mirror);
	munmap(p + PS, 5 * PS);
	free(b->mirror);
	free(b);
	close(fd);
}

/* mixedmap: the device file's own mapping reads as present, read-only */
Test(dmirror, the_device_files_mapping_is_present_and_read_only_until_written)
{
	int fd = dev_open(0);
	unsigned char byte = 0xee;
	struct buffer s = { mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), &byte, 1,
			    0, 0 };

	cr_assert_neq(s.ptr, MAP_FAILED);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_SNAPSHOT, &s, 1), 0);
	cr_assert_eq(byte, HMM_DMIRROR_PROT_READ);
	cr_assert_eq(((unsigned char *)s.ptr)[0], 0, "fresh pages are zeros");
	munmap(s.ptr, PS);
	close(fd);
}

/* exclusive: the CPU's access takes the pages back */
Test(dmirror, exclusive_pages_return_to_the_cpu_when_it_writes)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);

	fill_index(b->ptr, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_EXCLUSIVE, b, NPAGES), 0);
	cr_assert_eq(b->cpages, NPAGES);
	expect_index(b->mirror, NPAGES, 0, "what the device read");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, b, NPAGES), -EPERM,
		     "still held by the device");
	for (size_t i = 0; i < NPAGES * PS / sizeof(int); i++)
		((int *)b->ptr)[i] += 1;
	expect_index(b->ptr, NPAGES, 1, "after the CPU's writes");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, b, NPAGES), 0);
	buffer_free(b);
	close(fd);
}

/* migrate_release: RELEASE brings every page back without a CPU fault */
Test(dmirror, release_brings_every_device_page_back)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct buffer s = { b->ptr, malloc(NPAGES), NPAGES, 0, 0 };

	fill_index(b->ptr, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, NPAGES), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_RELEASE, b, NPAGES), 0);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_SNAPSHOT, &s, NPAGES), 0);
	for (size_t i = 0; i < NPAGES; i++)
		cr_assert_eq(((unsigned char *)s.mirror)[i], HMM_DMIRROR_PROT_WRITE, "page %zu", i);
	expect_index(b->ptr, NPAGES, 0, "after RELEASE");
	free(s.mirror);
	buffer_free(b);
	close(fd);
}

/* anon_write_child: the child opens its own device; the parent is unchanged */
Test(dmirror, a_child_writes_through_its_own_device_and_the_parent_keeps_its_data)
{
	int fd = dev_open(0), status;
	struct buffer *b = buffer_new(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	pid_t pid;

	fill_index(b->ptr, NPAGES);
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, NPAGES), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int cfd = open("/dev/hmm_dmirror0", O_RDWR);
		struct hmm_dmirror_cmd c = { .addr = (uintptr_t)b->ptr,
					     .ptr = (uintptr_t)b->mirror, .npages = NPAGES };

		if (cfd < 0)
			_exit(2);
		/* The inherited descriptor belongs to the parent's devices. */
		if (ioctl(fd, HMM_DMIRROR_READ, &c) == 0 || errno != ENODEV)
			_exit(3);
		for (size_t i = 0; i < NPAGES * PS / sizeof(int); i++)
			((int *)b->mirror)[i] = -(int)i;
		if (ioctl(cfd, HMM_DMIRROR_WRITE, &c))
			_exit(4);
		for (size_t i = 0; i < NPAGES * PS / sizeof(int); i++)
			if (((int *)b->ptr)[i] != -(int)i)
				_exit(5);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %#x", status);
	expect_index(b->ptr, NPAGES, 0, "the parent's memory");
	buffer_free(b);
	close(fd);
}

/* The driver's argument checks. */
Test(dmirror, bad_commands_are_refused_and_change_nothing)
{
	int fd = dev_open(0);
	struct buffer *b = buffer_new(4, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct buffer odd = *b;

	odd.ptr = (char *)b->ptr + 1;
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, &odd, 1), -EINVAL, "unaligned addr");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, 0), -EINVAL, "no pages");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, b, UINT64_MAX / PS), -EINVAL, "wraps");
	cr_assert_eq(dcmd(fd, _IOWR('H', 0x3f, struct hmm_dmirror_cmd), b, 1), -EINVAL,
		     "unknown command");
	cr_assert_eq(ioctl(fd, HMM_DMIRROR_READ, (void *)8), -1);
	cr_assert_eq(errno, EFAULT, "the command itself unreadable");
	odd.ptr = b->ptr;
	odd.mirror = (void *)8;
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_READ, &odd, 1), -EFAULT, "ptr unwritable");
	cr_assert_eq(dcmd(fd, HMM_DMIRROR_WRITE, &odd, 1), -EFAULT, "ptr unreadable");
	buffer_free(b);
	close(fd);
}
