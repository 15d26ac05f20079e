/* SPDX-License-Identifier: MIT */
/*
 * test_anon_migrate.c - anonymous memory migrated to embedded devices,
 * through the real libhmm.so and a real userfaultfd: the three phases and
 * their flags, CPU faults that bring pages back with their data, device
 * access to device-resident pages without a fault-back, another device's
 * access that brings them back, munmap and madvise freeing device pages,
 * fork and mremap keeping the data, the kernel's refusals, and writers
 * racing migrations without losing a write.
 */
#define _GNU_SOURCE
#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL
#define NPAGES 1024 /* 4 MiB, as the kernel's hmm-tests use */

static struct hmm_device *dev, *dev2;
static struct hmm_mirror *mir, *mir2;

static void setup(void)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 16 << 20, .numa_node = -1 };

	cr_assert_eq(hmm_device_create(&cfg, &dev), 0);
	cr_assert_eq(hmm_device_create(&cfg, &dev2), 0);
	cr_assert_eq(hmm_mirror_create(dev, &mir), 0);
	cr_assert_eq(hmm_mirror_create(dev2, &mir2), 0);
}

static void teardown(void)
{
	hmm_mirror_destroy(mir);
	hmm_mirror_destroy(mir2);
	cr_assert_eq(hmm_device_destroy(dev), 0);
	cr_assert_eq(hmm_device_destroy(dev2), 0);
}

TestSuite(anon, .init = setup, .fini = teardown, .timeout = 120);

static struct hmm_device_stats dstats(struct hmm_device *d)
{
	struct hmm_device_stats st;

	cr_assert_eq(hmm_device_stats(d, &st), 0);
	return st;
}

static unsigned char *anon_map(size_t npages)
{
	unsigned char *p = mmap(NULL, npages * PS, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 31 + seed);
}

static void expect_fill(const unsigned char *p, size_t len, unsigned seed, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (unsigned char)(i * 31 + seed))
			cr_assert_fail("%s: byte %zu is 0x%02x, not 0x%02x", what, i, p[i],
				       (unsigned char)(i * 31 + seed));
}

static void to_device(struct hmm_device *d, void *p, size_t npages, uint64_t want_moved)
{
	uint64_t moved = ~0ULL;
	int rc = hmm_migrate_to_device(d, p, npages * PS, &moved);

	cr_assert_eq(rc, 0, "hmm_migrate_to_device: %s", strerror(-rc));
	cr_assert_eq(moved, want_moved, "moved %llu pages, not %llu",
		     (unsigned long long)moved, (unsigned long long)want_moved);
}

Test(anon, bad_arguments_are_refused_and_change_nothing)
{
	unsigned char *p = anon_map(4);
	uint64_t src[4], dst[4];
	struct hmm_migrate_vma a = { .start = (uint64_t)(uintptr_t)p,
				     .end = (uint64_t)(uintptr_t)p + 4 * PS, .src = src, .dst = dst,
				     .pgmap_owner = dev, .flags = HMM_MIGRATE_VMA_SELECT_SYSTEM };
	struct hmm_migrate_vma b;
	uint64_t moved = 7;

	fill(p, 4 * PS, 1);
	b = a, b.start += 1;
	cr_assert_eq(hmm_migrate_vma_setup(&b), -EINVAL, "misaligned start");
	b = a, b.end = b.start;
	cr_assert_eq(hmm_migrate_vma_setup(&b), -EINVAL, "empty range");
	b = a, b.src = NULL;
	cr_assert_eq(hmm_migrate_vma_setup(&b), -EINVAL, "NULL src");
	b = a, b.pgmap_owner = NULL;
	cr_assert_eq(hmm_migrate_vma_setup(&b), -EINVAL, "NULL owner");
	b = a, b.flags = 3;
	cr_assert_eq(hmm_migrate_vma_setup(&b), -EINVAL, "two selectors");
	b = a, b.reserved = 1;
	cr_assert_eq(hmm_migrate_vma_setup(&b), -EINVAL, "reserved");
	cr_assert_eq(hmm_migrate_vma_setup(NULL), -EINVAL);
	cr_assert_eq(hmm_migrate_to_device(NULL, p, PS, &moved), -EINVAL);
	cr_assert_eq(moved, 0);
	cr_assert_eq(hmm_migrate_to_device(dev, p + 1, PS, NULL), -EINVAL);
	cr_assert_eq(hmm_migrate_to_device(dev, p, 0, NULL), -EINVAL);
	cr_assert_eq(hmm_migrate_to_ram(p, PS + 1, NULL), -EINVAL);
	cr_assert_eq(hmm_device_stats(NULL, NULL), -EINVAL);
	cr_assert_eq(dstats(dev).used, 0);
	expect_fill(p, 4 * PS, 1, "after refused calls");
	munmap(p, 4 * PS);
}

Test(anon, pages_move_to_the_device_and_a_cpu_read_brings_each_back)
{
	unsigned char *p = anon_map(NPAGES);

	fill(p, NPAGES * PS, 2);
	to_device(dev, p, NPAGES, NPAGES);
	cr_assert_eq(dstats(dev).used, NPAGES * PS);
	cr_assert_eq(dstats(dev).pages_in, NPAGES);
	cr_assert_eq(dstats(dev).cpu_faults, 0);
	/* The CPU reads: every page faults back with its data. */
	expect_fill(p, NPAGES * PS, 2, "after the round trip");
	cr_assert_eq(dstats(dev).cpu_faults, NPAGES);
	cr_assert_eq(dstats(dev).pages_out, NPAGES);
	cr_assert_eq(dstats(dev).used, 0);
	munmap(p, NPAGES * PS);
}

Test(anon, evicting_a_device_brings_back_its_pages_only_wherever_they_are)
{
	unsigned char *p = anon_map(NPAGES), *q = anon_map(NPAGES), *o = anon_map(NPAGES);

	fill(p, NPAGES * PS, 3);
	fill(q, NPAGES * PS, 4);
	fill(o, NPAGES * PS, 5);
	to_device(dev, p, NPAGES, NPAGES);
	to_device(dev, q, NPAGES, NPAGES);
	to_device(dev2, o, NPAGES, NPAGES);
	cr_assert_eq(hmm_device_evict(NULL), -EINVAL);
	cr_assert_eq(hmm_device_evict(dev), 0);
	cr_assert_eq(dstats(dev).used, 0);
	cr_assert_eq(dstats(dev).pages_out, 2 * NPAGES);
	cr_assert_eq(dstats(dev2).used, NPAGES * PS, "the other device keeps its pages");
	/* Back without a CPU fault, data intact. */
	expect_fill(p, NPAGES * PS, 3, "the first range");
	expect_fill(q, NPAGES * PS, 4, "the second range");
	cr_assert_eq(dstats(dev).cpu_faults, 0);
	cr_assert_eq(hmm_device_evict(dev), 0, "nothing left: still fine");
	expect_fill(o, NPAGES * PS, 5, "the other device's range");
	cr_assert_eq(dstats(dev2).cpu_faults, NPAGES);
	munmap(p, NPAGES * PS);
	munmap(q, NPAGES * PS);
	munmap(o, NPAGES * PS);
}

Test(anon, the_owner_device_reads_and_writes_its_pages_without_bringing_them_back)
{
	unsigned char *p = anon_map(64), *buf = malloc(64 * PS);

	fill(p, 64 * PS, 3);
	to_device(dev, p, 64, 64);
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)p, buf, 64 * PS), 0);
	expect_fill(buf, 64 * PS, 3, "the device's read of its own pages");
	fill(buf, 64 * PS, 4);
	cr_assert_eq(hmm_mirror_write(mir, (uint64_t)(uintptr_t)p, buf, 64 * PS), 0);
	cr_assert_eq(dstats(dev).cpu_faults, 0, "no page came back for the owner");
	cr_assert_eq(dstats(dev).used, 64 * PS);
	/* The CPU then sees what the device wrote. */
	expect_fill(p, 64 * PS, 4, "the CPU's read of the device's write");
	cr_assert_eq(dstats(dev).used, 0);
	free(buf);
	munmap(p, 64 * PS);
}

Test(anon, another_device_reading_brings_the_pages_back_first)
{
	unsigned char *p = anon_map(32), *buf = malloc(32 * PS);

	fill(p, 32 * PS, 5);
	to_device(dev, p, 32, 32);
	cr_assert_eq(hmm_mirror_read(mir2, (uint64_t)(uintptr_t)p, buf, 32 * PS), 0);
	expect_fill(buf, 32 * PS, 5, "the other device's read");
	cr_assert_eq(dstats(dev).used, 0, "the pages came back to host RAM");
	cr_assert_eq(dstats(dev).pages_out, 32);
	/* And to the second device from there. */
	to_device(dev2, p, 32, 32);
	expect_fill(p, 32 * PS, 5, "after moving to the second device");
	free(buf);
	munmap(p, 32 * PS);
}

Test(anon, holes_migrate_read_zero_and_take_writes)
{
	unsigned char *p = anon_map(16);

	to_device(dev, p, 16, 16);
	cr_assert_eq(dstats(dev).used, 16 * PS);
	for (size_t i = 0; i < 16 * PS; i++)
		cr_assert_eq(p[i], 0, "byte %zu of a migrated hole", i);
	p[5 * PS + 7] = 0x42;
	cr_assert_eq(p[5 * PS + 7], 0x42);
	munmap(p, 16 * PS);
}

Test(anon, a_cpu_write_brings_the_page_back_with_the_other_bytes_intact)
{
	unsigned char *p = anon_map(4);

	fill(p, 4 * PS, 6);
	to_device(dev, p, 4, 4);
	p[PS + 100] = 0xee;
	cr_assert_eq(dstats(dev).cpu_faults, 1);
	cr_assert_eq(p[PS + 100], 0xee);
	p[PS + 100] = (unsigned char)((PS + 100) * 31 + 6);
	expect_fill(p, 4 * PS, 6, "after the write");
	munmap(p, 4 * PS);
}

Test(anon, munmap_and_madvise_dontneed_free_the_device_pages)
{
	unsigned char *p = anon_map(64);

	fill(p, 64 * PS, 7);
	to_device(dev, p, 64, 64);
	cr_assert_eq(madvise(p, 16 * PS, MADV_DONTNEED), 0);
	cr_assert_eq(dstats(dev).used, 48 * PS, "DONTNEED freed 16 pages");
	for (size_t i = 0; i < 16 * PS; i++)
		cr_assert_eq(p[i], 0, "byte %zu after DONTNEED reads zero", i);
	cr_assert_eq(dstats(dev).cpu_faults, 0, "cleared pages do not come back");
	cr_assert_eq(munmap(p + 16 * PS, 48 * PS), 0);
	cr_assert_eq(dstats(dev).used, 0, "munmap freed the rest");
	munmap(p, 16 * PS);
}

Test(anon, fork_gives_both_sides_the_data)
{
	unsigned char *p = anon_map(64);
	pid_t pid;
	int status;

	fill(p, 64 * PS, 8);
	to_device(dev, p, 64, 64);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (size_t i = 0; i < 64 * PS; i++)
			if (p[i] != (unsigned char)(i * 31 + 8))
				_exit(1);
		memset(p, 0x11, 64 * PS);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child read the data");
	expect_fill(p, 64 * PS, 8, "the parent after the child wrote");
	munmap(p, 64 * PS);
}

Test(anon, mremap_moves_the_data_with_the_range)
{
	unsigned char *p = anon_map(32), *q;

	fill(p, 32 * PS, 9);
	to_device(dev, p, 32, 32);
	q = mremap(p, 32 * PS, 64 * PS, MREMAP_MAYMOVE);
	cr_assert_neq(q, MAP_FAILED);
	expect_fill(q, 32 * PS, 9, "after mremap");
	munmap(q, 64 * PS);
}

Test(anon, shared_and_file_memory_is_refused_with_enoent)
{
	unsigned char *s = mmap(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				-1, 0);
	uint64_t moved = 9;

	cr_assert_neq(s, MAP_FAILED);
	fill(s, 8 * PS, 10);
	cr_assert_eq(hmm_migrate_to_device(dev, s, 8 * PS, &moved), -ENOENT);
	cr_assert_eq(moved, 0);
	cr_assert_eq(dstats(dev).used, 0);
	expect_fill(s, 8 * PS, 10, "shared memory left alone");
	munmap(s, 8 * PS);
}

/* The mapping that holds addr, from /proc/self/maps; its name into name. */
static void mapping_of(const void *addr, uintptr_t *start, uintptr_t *end, char *name,
		       size_t name_len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	bool found = false;

	cr_assert_not_null(f);
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		int at = 0;

		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &s, &e, &at) >= 2 &&
		    s <= (uintptr_t)addr && (uintptr_t)addr < e) {
			*start = s;
			*end = e;
			snprintf(name, name_len, "%s", at ? line + at : "");
			name[strcspn(name, "\n")] = '\0';
			found = true;
		}
	}
	fclose(f);
	cr_assert(found, "no mapping holds %p", addr);
}

/*
 * Migration moves whole pages: a small malloc'd block takes the blocks
 * around it and the allocator's own bookkeeping to the device; here the
 * whole heap goes.  libhmm's
 * objects are never among them (they live in its own mappings), so the
 * thread that serves CPU faults never faults itself, and the program goes
 * on: every neighbour comes back when touched.
 */
Test(anon, the_heap_of_a_small_malloc_block_moves_and_the_program_goes_on)
{
#if defined(__SANITIZE_ADDRESS__)
	cr_skip("under ASan libhmm allocates with ASan's allocator, which shares pages with "
		"the program's blocks (see alloc.c)");
#else
	uint64_t moved = 0, st0 = dstats(dev).pages_in;
	uintptr_t vs, ve, lo, hi;
	char name[256];
	unsigned char *small = malloc(100), *more[64], *buf = malloc(100);
	int rc;

	cr_assert_not_null(small);
	cr_assert_not_null(buf);
	fill(small, 100, 21);
	mapping_of(small, &vs, &ve, name, sizeof(name));
	/* The block's whole mapping (the heap, which holds what libhmm would
	 * have malloc'd), up to 32 MiB either side. */
	lo = (uintptr_t)small > vs + (32 << 20) ? ((uintptr_t)small & ~(uintptr_t)(PS - 1)) - (32 << 20) : vs;
	hi = (uintptr_t)small + (32 << 20) < ve ? ((uintptr_t)small & ~(uintptr_t)(PS - 1)) + (32 << 20) : ve;
	/* Pages shared with the parent since fork (the test runner's) stay:
	 * -ENOENT says some did not move, as with the kernel. */
	rc = hmm_migrate_to_device(dev, (void *)lo, hi - lo, &moved);
	cr_assert(rc == 0 || rc == -ENOENT, "migrating around a malloc block: %s", strerror(-rc));
	cr_assert_geq(moved, 1, "the block's own page moved");
	cr_assert_geq(dstats(dev).pages_in - st0, moved);
	/* The device reads the block where it is: libhmm's tables are not on
	 * the device. */
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)small, buf, 100), 0);
	expect_fill(buf, 100, 21, "the device's read of the moved block");
	/* The allocator's bookkeeping and the neighbours come back as the
	 * program touches them. */
	for (int i = 0; i < 64; i++) {
		more[i] = malloc(40 + (size_t)i * 8);
		cr_assert_not_null(more[i]);
		fill(more[i], 40 + (size_t)i * 8, (unsigned)i);
	}
	for (int i = 0; i < 64; i += 2)
		free(more[i]);
	expect_fill(small, 100, 21, "the CPU's read of the moved block");
	for (int i = 1; i < 64; i += 2) {
		expect_fill(more[i], 40 + (size_t)i * 8, (unsigned)i, "a later block");
		free(more[i]);
	}
	/* And libhmm still migrates: its fault server was never stuck. */
	{
		unsigned char *p = anon_map(16);

		fill(p, 16 * PS, 22);
		to_device(dev, p, 16, 16);
		expect_fill(p, 16 * PS, 22, "a migration after the heap's");
		munmap(p, 16 * PS);
	}
	free(small);
	free(buf);
#endif
}

/*
 * libhmm's own memory is refused: a device page (a device's memory) and,
 * but under ASan, where libhmm allocates from the C library, the page of a
 * struct hmm_device (libhmm's own object).
 */
Test(anon, libhmm_s_own_memory_is_refused_and_keeps_working)
{
	unsigned char *p = anon_map(4);
	uint64_t moved = 9;
	void *page;

	cr_assert_eq(hmm_device_page_alloc(dev, &page), 0);
	cr_assert_eq(hmm_migrate_to_device(dev2, page, PS, &moved), -ENOENT);
	cr_assert_eq(moved, 0);
	hmm_device_page_free(dev, page);
#if !defined(__SANITIZE_ADDRESS__)
	moved = 9;
	cr_assert_eq(hmm_migrate_to_device(dev, (void *)((uintptr_t)dev & ~(uintptr_t)(PS - 1)),
					   4 * PS, &moved),
		     -ENOENT);
	cr_assert_eq(moved, 0);
#endif
	cr_assert_eq(dstats(dev).used, 0);
	cr_assert_eq(dstats(dev2).used, 0);
	fill(p, 4 * PS, 23);
	to_device(dev, p, 4, 4);
	expect_fill(p, 4 * PS, 23, "a migration after the refused ones");
	munmap(p, 4 * PS);
}

Test(anon, the_three_phases_report_flags_and_keep_pages_without_a_destination)
{
	unsigned char *p = anon_map(8);
	uint64_t src[8], dst[8];
	struct hmm_migrate_vma a = { .start = (uint64_t)(uintptr_t)p,
				     .end = (uint64_t)(uintptr_t)p + 8 * PS, .src = src, .dst = dst,
				     .pgmap_owner = dev, .flags = HMM_MIGRATE_VMA_SELECT_SYSTEM };

	fill(p, 4 * PS, 11); /* pages 4..7 stay holes */
	cr_assert_eq(mprotect(p + 6 * PS, 2 * PS, PROT_READ), 0);
	cr_assert_eq(hmm_migrate_vma_setup(&a), 0);
	cr_assert_eq(a.npages, 8);
	cr_assert_eq(a.cpages, 8);
	for (int i = 0; i < 8; i++) {
		cr_assert(src[i] & HMM_MIGRATE_PFN_MIGRATE, "page %d collected", i);
		cr_assert_eq(!!(src[i] & HMM_MIGRATE_PFN_VALID), i < 4, "page %d VALID", i);
		cr_assert_eq(!!(src[i] & HMM_MIGRATE_PFN_WRITE), i < 6, "page %d WRITE", i);
		if (i < 4)
			cr_assert_eq(hmm_migrate_pfn_to_addr(src[i]), p + i * PS);
	}
	/* Pages 0 and 4 get a destination; the others stay. */
	for (int i = 0; i < 8; i += 4) {
		void *page;

		cr_assert_eq(hmm_device_page_alloc(dev, &page), 0);
		if (src[i] & HMM_MIGRATE_PFN_VALID)
			cr_assert_eq(hmm_device_dma(dev, page, hmm_migrate_pfn_to_addr(src[i]), PS), 0);
		else
			memset(page, 0, PS);
		dst[i] = hmm_migrate_pfn(page);
	}
	hmm_migrate_vma_pages(&a);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(!!(src[i] & HMM_MIGRATE_PFN_MIGRATE), i % 4 == 0,
			     "page %d MIGRATE after pages", i);
	hmm_migrate_vma_finalize(&a);
	cr_assert_eq(dstats(dev).used, 2 * PS);
	/* The pages that stayed are writable at once. */
	p[PS] = 0x77;
	p[5 * PS] = 0x78;
	cr_assert_eq(dstats(dev).cpu_faults, 0);
	p[PS] = (unsigned char)(PS * 31 + 11);
	expect_fill(p, 4 * PS, 11, "pages 0 to 3");
	cr_assert_eq(dstats(dev).cpu_faults, 1, "page 0 came back");
	munmap(p, 8 * PS);
}

Test(anon, migrate_to_ram_and_device_destroy_bring_pages_back)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 1 << 20, .numa_node = -1 };
	struct hmm_device *d3;
	unsigned char *p = anon_map(32);
	uint64_t moved;

	fill(p, 32 * PS, 12);
	to_device(dev, p, 16, 16);
	cr_assert_eq(hmm_migrate_to_ram(p, 32 * PS, &moved), 0);
	cr_assert_eq(moved, 16);
	cr_assert_eq(dstats(dev).used, 0);
	cr_assert_eq(hmm_device_create(&cfg, &d3), 0);
	to_device(d3, p, 32, 32);
	cr_assert_eq(hmm_device_destroy(d3), 0);
	expect_fill(p, 32 * PS, 12, "after the device went away");
	munmap(p, 32 * PS);
}

Test(anon, a_full_device_moves_what_fits_and_says_enospc)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 8 * PS, .numa_node = -1 };
	struct hmm_device *small;
	unsigned char *p = anon_map(16);
	uint64_t moved;

	fill(p, 16 * PS, 13);
	cr_assert_eq(hmm_device_create(&cfg, &small), 0);
	cr_assert_eq(hmm_migrate_to_device(small, p, 16 * PS, &moved), -ENOSPC);
	cr_assert_eq(moved, 8);
	p[15 * PS] = (unsigned char)(15 * PS * 31 + 13); /* still writable */
	expect_fill(p, 16 * PS, 13, "after ENOSPC");
	cr_assert_eq(hmm_device_destroy(small), 0);
	munmap(p, 16 * PS);
}

/* -- writers racing migrations */

#define RACE_PAGES 64
#define RACE_ROUNDS 200

struct race {
	uint64_t *mem;       /* one counter per page */
	int stop;
	uint64_t writes[RACE_PAGES];
};

static void *race_writer(void *arg)
{
	struct race *r = arg;
	unsigned i = 0;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		unsigned pg = (i * 7) % RACE_PAGES;

		r->mem[pg * (PS / 8)]++;
		r->writes[pg]++;
		i++;
	}
	return NULL;
}

Test(anon, a_writer_racing_migrations_to_two_devices_loses_no_write)
{
	struct race *r = calloc(1, sizeof(*r));
	pthread_t t;

	r->mem = (uint64_t *)anon_map(RACE_PAGES);
	memset(r->mem, 0, RACE_PAGES * PS);
	cr_assert_eq(pthread_create(&t, NULL, race_writer, r), 0);
	for (int i = 0; i < RACE_ROUNDS; i++) {
		uint64_t moved;
		int rc = hmm_migrate_to_device(i % 2 ? dev : dev2, r->mem, RACE_PAGES * PS, &moved);

		cr_assert(rc == 0 || rc == -ENOENT, "round %d: %s", i, strerror(-rc));
	}
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	for (int pg = 0; pg < RACE_PAGES; pg++)
		cr_assert_eq(r->mem[pg * (PS / 8)], r->writes[pg], "page %d: %llu, wrote %llu", pg,
			     (unsigned long long)r->mem[pg * (PS / 8)],
			     (unsigned long long)r->writes[pg]);
	cr_assert_gt(dstats(dev).cpu_faults + dstats(dev2).cpu_faults, 0);
	munmap(r->mem, RACE_PAGES * PS);
	free(r);
}

Test(anon, a_device_access_whose_buffer_is_on_a_device_completes)
{
	unsigned char *p = anon_map(8), *buf = anon_map(8);

	fill(p, 8 * PS, 14);
	to_device(dev, buf, 8, 8);
	/* The mirror copies into a buffer that must fault back meanwhile. */
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)p, buf, 8 * PS), 0);
	expect_fill(buf, 8 * PS, 14, "the buffer on the device");
	fill(buf, 8 * PS, 15);
	to_device(dev, buf, 8, 8);
	cr_assert_eq(hmm_mirror_write(mir, (uint64_t)(uintptr_t)p, buf, 8 * PS), 0);
	expect_fill(p, 8 * PS, 15, "written from a buffer on the device");
	munmap(p, 8 * PS);
	munmap(buf, 8 * PS);
}

/* -- exclusive access for device atomics */

Test(anon, exclusive_pages_take_device_atomics_and_come_back_at_the_first_cpu_access)
{
	uint64_t *w = (uint64_t *)anon_map(16), old = 0;
	uint64_t start = (uint64_t)(uintptr_t)w;

	fill((unsigned char *)w, 16 * PS, 16);
	w[0] = 100;
	cr_assert_eq(hmm_make_device_exclusive(mir, start, start + 16 * PS), 0);
	cr_assert_eq(hmm_mirror_check_exclusive(mir, start, start + 16 * PS), 0);
	cr_assert_eq(hmm_mirror_check_exclusive(mir2, start, start + PS), -EPERM);
	cr_assert_eq(hmm_mirror_atomic_add_u64(mir, start, 5, &old), 0);
	cr_assert_eq(old, 100);
	/* The CPU reads: the page comes back with the device's result. */
	cr_assert_eq(w[0], 105);
	cr_assert_eq(hmm_mirror_check_exclusive(mir, start, start + PS), -EPERM,
		     "the device lost page 0");
	cr_assert_eq(hmm_mirror_check_exclusive(mir, start + PS, start + 16 * PS), 0,
		     "and kept the others");
	w[0] = (uint64_t)0;
	fill((unsigned char *)w, 8, 16);
	expect_fill((unsigned char *)w, 16 * PS, 16, "after the CPU took every page back");
	munmap(w, 16 * PS);
}

Test(anon, an_atomic_on_a_page_not_held_takes_it_first)
{
	uint64_t *w = (uint64_t *)anon_map(2), old = 1;
	uint64_t start = (uint64_t)(uintptr_t)w;

	w[PS / 8 + 3] = 41;
	cr_assert_eq(hmm_mirror_atomic_add_u64(mir, start + PS + 24, 1, &old), 0);
	cr_assert_eq(old, 41);
	cr_assert_eq(hmm_mirror_check_exclusive(mir, start + PS, start + 2 * PS), 0);
	cr_assert_eq(hmm_mirror_check_exclusive(mir, start, start + PS), -EPERM);
	cr_assert_eq(w[PS / 8 + 3], 42);
	munmap(w, 2 * PS);
}

Test(anon, exclusive_access_refuses_bad_ranges_shared_and_read_only_memory)
{
	unsigned char *p = anon_map(2);
	unsigned char *s = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t start = (uint64_t)(uintptr_t)p;

	cr_assert_neq(s, MAP_FAILED);
	cr_assert_eq(hmm_make_device_exclusive(mir, start + 1, start + PS), -EINVAL);
	cr_assert_eq(hmm_make_device_exclusive(mir, start, start), -EINVAL);
	cr_assert_eq(hmm_make_device_exclusive(NULL, start, start + PS), -EINVAL);
	cr_assert_eq(hmm_mirror_atomic_add_u64(mir, start + 4, 1, NULL), -EINVAL);
	cr_assert_eq(hmm_make_device_exclusive(mir, (uint64_t)(uintptr_t)s,
					       (uint64_t)(uintptr_t)s + PS), -EFAULT);
	cr_assert_eq(mprotect(p + PS, PS, PROT_READ), 0);
	cr_assert_eq(hmm_make_device_exclusive(mir, start, start + 2 * PS), -EPERM);
	cr_assert_eq(hmm_mirror_check_exclusive(mir, start, start + PS), -EPERM,
		     "a refused range takes nothing");
	p[0] = 1; /* still the CPU's */
	munmap(s, PS);
	munmap(p, 2 * PS);
}

Test(anon, mprotect_read_only_ends_device_atomics_with_eperm)
{
	uint64_t *w = (uint64_t *)anon_map(1);
	uint64_t start = (uint64_t)(uintptr_t)w;

	w[1] = 7;
	cr_assert_eq(hmm_make_device_exclusive(mir, start, start + PS), 0);
	cr_assert_eq(mprotect(w, PS, PROT_READ), 0);
	cr_assert_eq(hmm_mirror_atomic_add_u64(mir, start + 8, 1, NULL), -EPERM);
	cr_assert_eq(w[1], 7, "the CPU reads the page back through the read-only mapping");
	munmap(w, PS);
}

Test(anon, fork_after_exclusive_access_gives_the_child_its_own_copy)
{
	uint64_t *w = (uint64_t *)anon_map(1);
	uint64_t start = (uint64_t)(uintptr_t)w;
	pid_t pid;
	int status;

	w[0] = 10;
	cr_assert_eq(hmm_make_device_exclusive(mir, start, start + PS), 0);
	cr_assert_eq(hmm_mirror_atomic_add_u64(mir, start, 1, NULL), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(w[0] == 11 ? 0 : 1);
	cr_assert_eq(hmm_mirror_atomic_add_u64(mir, start, 1, NULL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child saw 11");
	cr_assert_eq(w[0], 12);
	munmap(w, PS);
}

#define ATOMIC_ROUNDS 20000

struct atomic_race {
	uint64_t *word;
	int go, stop;
	uint64_t cpu_adds;
};

/* Adds for as long as the device does, so that the page changes hands
 * again and again. */
static void *cpu_incrementer(void *arg)
{
	struct atomic_race *r = arg;

	while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE))
		;
	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		__atomic_fetch_add(r->word, 1, __ATOMIC_SEQ_CST);
		r->cpu_adds++;
	}
	return NULL;
}

Test(anon, cpu_and_device_atomics_on_one_word_lose_no_increment)
{
	uint64_t *w = (uint64_t *)anon_map(1);
	struct atomic_race r = { w, 0, 0, 0 };
	pthread_t t;

	w[0] = 0;
	cr_assert_eq(pthread_create(&t, NULL, cpu_incrementer, &r), 0);
	__atomic_store_n(&r.go, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < ATOMIC_ROUNDS; i++) {
		/* A pause now and then lets the CPU's fault take the page back. */
		if (i % 8 == 0)
			usleep(1);
		int rc = hmm_mirror_atomic_add_u64(mir, (uint64_t)(uintptr_t)w, 1, NULL);

		cr_assert_eq(rc, 0, "device atomic %d: %s", i, strerror(-rc));
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_assert_eq(w[0], ATOMIC_ROUNDS + r.cpu_adds, "%llu, not %d + %llu",
		     (unsigned long long)w[0], ATOMIC_ROUNDS, (unsigned long long)r.cpu_adds);
	cr_log_info("%llu CPU adds against %d device adds", (unsigned long long)r.cpu_adds,
		    ATOMIC_ROUNDS);
	munmap(w, PS);
}

/* -- the fault policy */

static void add_one(struct hmm_kernel *k, void *arg)
{
	uint64_t *x = arg, i = hmm_kernel_item(k);

	hmm_st_u64(k, &x[i], hmm_ld_u64(k, &x[i]) + 1);
}

Test(anon, advised_ranges_move_to_the_device_when_it_faults_and_nothing_else_does)
{
	uint64_t *x = (uint64_t *)anon_map(64), *other = (uint64_t *)anon_map(8);
	unsigned char *buf = malloc(16 * PS);
	size_t n = 64 * PS / 8;
	uint64_t block = ((((uint64_t)(uintptr_t)x) | ((2 << 20) - 1)) + 1 - (uint64_t)(uintptr_t)x) / PS;

	/* The read's own 16 pages, or more to the end of their 2 MiB block. */
	if (block < 16)
		block = 16;
	if (block > 64)
		block = 64;
	for (size_t i = 0; i < n; i++)
		x[i] = i;
	memset(other, 1, 8 * PS);
	cr_assert_eq(hmm_mirror_advise(mir, x, 64 * PS, 7), -EINVAL);
	cr_assert_eq(hmm_mirror_advise(mir, x, 64 * PS - 1, HMM_POLICY_MIGRATE), -EINVAL);
	cr_assert_eq(hmm_mirror_advise(mir, x, 0, HMM_POLICY_MIGRATE), -EINVAL);
	cr_assert_eq(hmm_mirror_advise(NULL, x, PS, HMM_POLICY_MIGRATE), -EINVAL);
	cr_assert_eq(hmm_mirror_advise(mir, x, 64 * PS, HMM_POLICY_MIGRATE), 0);
	/* A device read moves what it reads and the rest of its 2 MiB block,
	 * within the range. */
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)x, buf, 16 * PS), 0);
	cr_assert_eq(dstats(dev).pages_in, block, "%llu pages moved, not %llu",
		     (unsigned long long)dstats(dev).pages_in, (unsigned long long)block);
	cr_assert_eq(memcmp(buf, x, 16 * PS), 0, "the CPU's read brings the pages back equal");
	/* A kernel over the whole array runs on device memory; memory not
	 * advised stays where it is. */
	cr_assert_eq(hmm_launch(mir, n, add_one, x), 0);
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)other, buf, 8 * PS), 0);
	cr_assert_eq(dstats(dev).used, 64 * PS, "exactly the advised range is on the device");
	/* Every page once, and again those the CPU's read brought back. */
	cr_assert_eq(dstats(dev).pages_in, 64 + 16);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(x[i], i + 1, "x[%zu]", i);
	cr_assert_eq(dstats(dev).used, 0);
	/* Advice back to mapping: nothing moves any more. */
	cr_assert_eq(hmm_mirror_advise(mir, x, 64 * PS, HMM_POLICY_MAP), 0);
	cr_assert_eq(hmm_launch(mir, n, add_one, x), 0);
	cr_assert_eq(dstats(dev).used, 0, "mapping in place moves nothing");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(x[i], i + 2, "x[%zu]", i);
	/* Advice over part of a range splits it (fresh pages: the device has
	 * not mapped them yet). */
	cr_assert_eq(munmap(x, 64 * PS), 0);
	x = (uint64_t *)anon_map(64);
	memset(x, 3, 64 * PS);
	cr_assert_eq(hmm_mirror_advise(mir, x, 64 * PS, HMM_POLICY_MIGRATE), 0);
	cr_assert_eq(hmm_mirror_advise(mir, x + 16 * PS / 8, 16 * PS, HMM_POLICY_MAP), 0);
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)(x + 16 * PS / 8), buf, PS), 0);
	cr_assert_eq(dstats(dev).used, 0, "the middle is no longer advised");
	cr_assert_eq(hmm_mirror_read(mir, (uint64_t)(uintptr_t)(x + 48 * PS / 8), buf, PS), 0);
	cr_assert_gt(dstats(dev).used, 0, "the end still is");
	free(buf);
	munmap(other, 8 * PS);
	munmap(x, 64 * PS);
}

/*
 * -- everything at once: migrations between two devices and back, a CPU
 * writer and a device reader on the migrating buffer, CPU and device
 * atomics on one word, and kernels on a range advised to migrate.  Found a
 * device entry outliving its CPU page and a migration finishing another's
 * page when it ran outside the test suite; every invariant is checked.
 */
#define ALL_PAGES 64
#define ALL_SECONDS 2

struct all {
	uint64_t *a, *w, *c;
	int stop;
	uint64_t writes[ALL_PAGES], cpu_adds, dev_adds;
	long launches;
	int errors;
};

static void *all_migrator(void *arg)
{
	struct all *s = arg;

	for (int i = 0; !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE); i++) {
		int rc = hmm_migrate_to_device(i % 2 ? dev : dev2, s->a, ALL_PAGES * PS, NULL);

		if (rc && rc != -ENOENT && rc != -ENOSPC)
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
		if (i % 3 == 0 && hmm_migrate_to_ram(s->a, ALL_PAGES * PS, NULL))
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *all_writer(void *arg)
{
	struct all *s = arg;

	for (unsigned i = 0; !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE); i++) {
		unsigned pg = (i * 7) % ALL_PAGES;

		s->a[pg * (PS / 8)]++;
		s->writes[pg]++;
	}
	return NULL;
}

static void *all_reader(void *arg)
{
	struct all *s = arg;
	unsigned char *buf = malloc(ALL_PAGES * PS);

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
		if (hmm_mirror_read(mir, (uint64_t)(uintptr_t)s->a, buf, ALL_PAGES * PS))
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
	free(buf);
	return NULL;
}

static void *all_cpu_adds(void *arg)
{
	struct all *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		__atomic_fetch_add(s->w, 1, __ATOMIC_SEQ_CST);
		s->cpu_adds++;
		usleep(10);
	}
	return NULL;
}

static void *all_device_adds(void *arg)
{
	struct all *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if (hmm_mirror_atomic_add_u64(mir2, (uint64_t)(uintptr_t)s->w, 1, NULL))
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
		else
			s->dev_adds++;
		usleep(10);
	}
	return NULL;
}

static void *all_launcher(void *arg)
{
	struct all *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if (hmm_launch(mir2, ALL_PAGES * PS / 8, add_one, s->c))
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
		else
			s->launches++;
	}
	return NULL;
}

Test(anon, migrations_faults_atomics_and_kernels_all_at_once_keep_every_invariant)
{
	void *(*fns[])(void *) = { all_migrator, all_writer, all_reader, all_cpu_adds,
				   all_device_adds, all_launcher };
	struct all *s = calloc(1, sizeof(*s));
	pthread_t t[6];

	s->a = (uint64_t *)anon_map(ALL_PAGES);
	s->w = (uint64_t *)anon_map(1);
	s->c = (uint64_t *)anon_map(ALL_PAGES);
	memset(s->a, 0, ALL_PAGES * PS);
	memset(s->c, 0, ALL_PAGES * PS);
	*s->w = 0;
	cr_assert_eq(hmm_mirror_advise(mir2, s->c, ALL_PAGES * PS, HMM_POLICY_MIGRATE), 0);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, fns[i], s), 0);
	sleep(ALL_SECONDS);
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(s->errors, 0);
	for (int pg = 0; pg < ALL_PAGES; pg++)
		cr_assert_eq(s->a[pg * (PS / 8)], s->writes[pg], "page %d lost writes", pg);
	cr_assert_eq(*s->w, s->cpu_adds + s->dev_adds);
	for (size_t i = 0; i < ALL_PAGES * PS / 8; i++)
		cr_assert_eq(s->c[i], (uint64_t)s->launches, "c[%zu] after %ld launches", i,
			     s->launches);
	cr_log_info("%ld launches, %llu CPU and %llu device adds", s->launches,
		    (unsigned long long)s->cpu_adds, (unsigned long long)s->dev_adds);
	munmap(s->a, ALL_PAGES * PS);
	munmap(s->w, PS);
	munmap(s->c, ALL_PAGES * PS);
	free(s);
}
