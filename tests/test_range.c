/* SPDX-License-Identifier: MIT */
/*
 * test_range.c - hmm_range_fault (libhmm/range.c) on real memory: fresh,
 * written, read-only, PROT_NONE and unmapped pages, shared anonymous and
 * file mappings, copy-on-write after a real fork, transparent huge pages,
 * the kernel's special mappings, the sequence protocol (-EBUSY) with a real
 * notifier, argument checking, and the fallbacks for kernels without
 * PROCMAP_QUERY or PAGEMAP_SCAN.
 */
#define _GNU_SOURCE
#include "hmm-internal.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PS 4096UL
#define FLAGS_OUT (HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_ERROR | HMM_PFN_ZERO)

/* A mirror's notifier: the callback takes the mirror lock and records the seq. */
struct mirror {
	pthread_mutex_t lock;
	unsigned calls; /* protected by lock */
	struct hmm_interval_notifier *sub;
};

static bool mirror_invalidate(struct hmm_interval_notifier *sub,
			      const struct hmm_notifier_range *r, uint64_t cur_seq)
{
	struct mirror *m = hmm_interval_notifier_priv(sub);

	(void)r;
	pthread_mutex_lock(&m->lock);
	hmm_interval_set_seq(sub, cur_seq);
	m->calls++;
	pthread_mutex_unlock(&m->lock);
	return true;
}

static const struct hmm_interval_notifier_ops mirror_ops = { .invalidate = mirror_invalidate };

static void mirror_init(struct mirror *m, uint64_t start, uint64_t len)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	cr_assert_eq(hmm_interval_notifier_insert(start, len, &mirror_ops, m, &m->sub), 0);
}

static void mirror_fini(struct mirror *m)
{
	hmm_interval_notifier_remove(m->sub);
	pthread_mutex_destroy(&m->lock);
}

/* One range fault of npages from p under a fresh read_begin. */
static int fault(struct mirror *m, void *p, size_t npages, uint64_t *pfns,
		 uint64_t default_flags, uint64_t mask)
{
	struct hmm_range r = {
		.notifier = m->sub,
		.notifier_seq = hmm_interval_read_begin(m->sub),
		.start = (uint64_t)(uintptr_t)p,
		.end = (uint64_t)(uintptr_t)p + npages * PS,
		.hmm_pfns = pfns,
		.default_flags = default_flags,
		.pfn_flags_mask = mask,
	};

	return hmm_range_fault(&r);
}

/* pfn must be exactly flags (VALID/WRITE/ERROR/ZERO), order 0, and name addr if VALID. */
static void expect_pfn(uint64_t pfn, const void *addr, uint64_t flags, const char *what, size_t i)
{
	cr_assert_eq(pfn & FLAGS_OUT, flags, "%s, page %zu: flags %#llx, expected %#llx", what, i,
		     (unsigned long long)(pfn & FLAGS_OUT), (unsigned long long)flags);
	if (!(flags & HMM_PFN_VALID)) {
		cr_assert_eq(pfn & ~HMM_PFN_ERROR, 0, "%s, page %zu: %#llx", what, i,
			     (unsigned long long)pfn);
		return;
	}
	cr_assert_eq(hmm_pfn_to_addr(pfn), addr, "%s, page %zu: names %p, not %p", what, i,
		     hmm_pfn_to_addr(pfn), addr);
	cr_assert_eq(hmm_pfn_to_map_order(pfn), 0, "%s, page %zu: order %u", what, i,
		     hmm_pfn_to_map_order(pfn));
}

static void expect_all(const uint64_t *pfns, char *p, size_t n, uint64_t flags, const char *what)
{
	for (size_t i = 0; i < n; i++)
		expect_pfn(pfns[i], p + i * PS, flags, what, i);
}

static char *map(size_t npages, int prot, int flags)
{
	char *p = mmap(NULL, npages * PS, prot, flags | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	/* No THP surprises in the 4 KiB tests, whatever the system's setting. */
	madvise(p, npages * PS, MADV_NOHUGEPAGE);
	return p;
}

Test(range, fresh_private_memory_reads_as_absent_without_a_fault_request)
{
	enum { N = 16 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	memset(pfns, 0xff, sizeof(pfns)); /* requests outside the mask are ignored */
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, 0, "no request");
	mirror_fini(&m);
}

Test(range, read_fault_on_fresh_private_memory_maps_the_zero_page_not_writable)
{
	enum { N = 16 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_ZERO, "read fault");
	/* Still the zero page, still not writable, when asked again without a fault. */
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_ZERO, "snapshot after the read fault");
	mirror_fini(&m);
}

Test(range, write_fault_on_fresh_private_memory_gives_writable_pages_at_their_address)
{
	enum { N = 16 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "write fault");
	/* A write fault after a read fault breaks away from the zero page. */
	char *q = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct mirror mq;

	mirror_init(&mq, (uintptr_t)q, N * PS);
	cr_assert_eq(fault(&mq, q, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	cr_assert_eq(fault(&mq, q, N, pfns, HMM_PFN_REQ_WRITE, 0), 0, "REQ_WRITE alone implies REQ_FAULT");
	expect_all(pfns, q, N, HMM_PFN_VALID | HMM_PFN_WRITE, "write fault over the zero page");
	mirror_fini(&mq);
	mirror_fini(&m);
}

Test(range, pages_the_cpu_wrote_are_valid_and_writable_without_a_request)
{
	enum { N = 8 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	p[3 * PS] = 1;
	p[5 * PS + 100] = 1;
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS,
			   i == 3 || i == 5 ? HMM_PFN_VALID | HMM_PFN_WRITE : 0, "after CPU writes", i);
	mirror_fini(&m);
}

Test(range, per_page_requests_count_only_under_pfn_flags_mask)
{
	enum { N = 6 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	const uint64_t reqs[N] = { 0, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE,
				   HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE, HMM_PFN_ERROR, 0 };
	const uint64_t want[N] = { 0, HMM_PFN_VALID | HMM_PFN_ZERO, HMM_PFN_VALID | HMM_PFN_WRITE,
				   HMM_PFN_VALID | HMM_PFN_WRITE, 0, 0 };
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	/* Mask 0: the words are ignored, nothing faults. */
	memcpy(pfns, reqs, sizeof(pfns));
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, 0, "mask 0");
	/* A mask with only REQ_FAULT: page 2's write request is dropped. */
	memcpy(pfns, reqs, sizeof(pfns));
	cr_assert_eq(fault(&m, p, N, pfns, 0, HMM_PFN_REQ_FAULT), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS, i == 1 || i == 3 ? HMM_PFN_VALID | HMM_PFN_ZERO : 0,
			   "mask REQ_FAULT", i);
	/* The full mask: each page as it asks. */
	memcpy(pfns, reqs, sizeof(pfns));
	cr_assert_eq(fault(&m, p, N, pfns, 0, HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS, want[i], "full mask", i);
	/* default_flags apply to every page, whatever the mask. */
	memset(pfns, 0, sizeof(pfns));
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS, want[i] ? want[i] : HMM_PFN_VALID | HMM_PFN_ZERO,
			   "default REQ_FAULT", i);
	mirror_fini(&m);
}

Test(range, write_request_on_a_read_only_mapping_is_eperm_and_faults_nothing)
{
	enum { N = 4 };
	char *p = map(N, PROT_READ, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_WRITE, 0), -EPERM);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, 0, "after -EPERM");
	/* Only the last page asks for a write: still -EPERM, and no page faulted. */
	memset(pfns, 0, sizeof(pfns));
	pfns[N - 1] = HMM_PFN_REQ_WRITE;
	cr_assert_eq(fault(&m, p, N, pfns, 0, HMM_PFN_REQ_WRITE), -EPERM);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, 0, "after the second -EPERM");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_ZERO, "read fault");
	mirror_fini(&m);
}

Test(range, prot_none_is_error_without_a_request_and_efault_with_one)
{
	enum { N = 4 };
	char *p = map(N, PROT_NONE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_ERROR, "PROT_NONE");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), -EFAULT);
	mirror_fini(&m);
}

Test(range, a_hole_in_the_middle_is_error_without_a_request_and_efault_with_one)
{
	enum { N = 5 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	p[0] = 1;
	p[4 * PS] = 1;
	cr_assert_eq(munmap(p + 2 * PS, PS), 0);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS,
			   i == 2 ? HMM_PFN_ERROR : i == 0 || i == 4 ? HMM_PFN_VALID | HMM_PFN_WRITE : 0,
			   "hole", i);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), -EFAULT);
	/* Asking only for the pages around the hole is fine. */
	for (size_t i = 0; i < N; i++)
		pfns[i] = i == 2 ? 0 : HMM_PFN_REQ_FAULT;
	cr_assert_eq(fault(&m, p, N, pfns, 0, HMM_PFN_REQ_FAULT), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS,
			   i == 2 ? HMM_PFN_ERROR : i == 0 || i == 4 ? HMM_PFN_VALID | HMM_PFN_WRITE
								 : HMM_PFN_VALID | HMM_PFN_ZERO,
			   "hole, faults around it", i);
	mirror_fini(&m);
}

/* The first mapping named name in /proc/self/maps, or NULL. */
static void *find_mapping(const char *name, size_t *len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	void *found = NULL;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		if (strlen(line) > strlen(name) && !strcmp(line + strlen(line) - strlen(name), name) &&
		    sscanf(line, "%llx-%llx", &s, &e) == 2) {
			found = (void *)(uintptr_t)s;
			*len = (size_t)(e - s);
			break;
		}
	}
	fclose(f);
	return found;
}

Test(range, kernel_special_mappings_are_error_or_efault)
{
	const char *names[] = { " [vvar]", " [vvar_vclock]", " [vsyscall]" };
	unsigned seen = 0;

	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		size_t len;
		char *p = find_mapping(names[k], &len);
		uint64_t pfns[1];
		struct mirror m;

		if (!p) {
			cr_log_info("no%s mapping in this process", names[k]);
			continue;
		}
		seen++;
		mirror_init(&m, (uintptr_t)p, PS);
		cr_assert_eq(fault(&m, p, 1, pfns, 0, 0), 0, "%s", names[k]);
		expect_pfn(pfns[0], p, HMM_PFN_ERROR, names[k], 0);
		cr_assert_eq(fault(&m, p, 1, pfns, HMM_PFN_REQ_FAULT, 0), -EFAULT, "%s", names[k]);
		mirror_fini(&m);
	}
	cr_assert_gt(seen, 0, "no special mapping found at all");
}

Test(range, shared_anonymous_memory_is_writable_after_a_write_fault)
{
	enum { N = 4 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_SHARED);
	uint64_t pfns[N];
	struct mirror m;

	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, 0, "fresh shared");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_WRITE, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "shared, write fault");
	mirror_fini(&m);
}

static int tmpfile_of(size_t npages)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	cr_assert_geq(fd, 0, "O_TMPFILE in /tmp: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)(npages * PS)), 0);
	return fd;
}

Test(range, shared_file_mapping_is_writable_after_a_write_fault)
{
	enum { N = 4 };
	int fd = tmpfile_of(N);
	char *p = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	uint64_t pfns[N];
	struct mirror m;

	cr_assert_neq(p, MAP_FAILED);
	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, 0, "fresh shared file");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_WRITE, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "shared file, write fault");
	mirror_fini(&m);
	close(fd);
}

Test(range, read_only_shared_file_mapping_is_valid_not_writable_and_eperm_for_writes)
{
	enum { N = 4 };
	int fd = tmpfile_of(N);
	char *p = mmap(NULL, N * PS, PROT_READ, MAP_SHARED, fd, 0);
	uint64_t pfns[N];
	struct mirror m;

	cr_assert_neq(p, MAP_FAILED);
	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_WRITE, 0), -EPERM);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID, "read-only shared file");
	mirror_fini(&m);
	close(fd);
}

Test(range, private_file_pages_are_not_writable_until_a_write_fault_copies_them)
{
	enum { N = 4 };
	int fd = tmpfile_of(N);
	char *p = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	uint64_t pfns[N];
	struct mirror m;

	cr_assert_neq(p, MAP_FAILED);
	cr_assert_eq(pwrite(fd, "file", 4, 0), 4);
	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID, "private file, read fault");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_WRITE, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "private file, write fault");
	cr_assert_eq(memcmp(p, "file", 4), 0);
	p[0] = 'F';
	char c;
	cr_assert_eq(pread(fd, &c, 1, 0), 1);
	cr_assert_eq(c, 'f', "the private copy must not reach the file");
	mirror_fini(&m);
	close(fd);
}

/*
 * After fork, the parent's written private pages are shared copy-on-write:
 * valid, not writable.  A write request breaks COW, and the child keeps
 * the old data.
 */
static void fork_cow(void)
{
	enum { N = 8 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int to_child[2], from_child[2], status;
	uint64_t pfns[N];
	struct mirror m;
	pid_t pid;
	char c;

	memset(p, 'a', N * PS);
	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "before fork");
	cr_assert_eq(pipe(to_child), 0);
	cr_assert_eq(pipe(from_child), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		bool ok = true;

		close(to_child[1]);
		close(from_child[0]);
		if (write(from_child[1], "r", 1) != 1 || read(to_child[0], &c, 1) != 1)
			_exit(2);
		for (size_t i = 0; i < N * PS; i++)
			ok &= p[i] == 'a';
		_exit(ok ? 0 : 1);
	}
	close(to_child[0]);
	close(from_child[1]);
	cr_assert_eq(read(from_child[0], &c, 1), 1);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID, "shared COW after fork");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID, "read fault leaves COW alone");
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_WRITE, 0), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "write fault broke COW");
	memset(p, 'b', N * PS);
	cr_assert_eq(write(to_child[1], "g", 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child saw the parent's writes (status %#x)", status);
	close(to_child[1]);
	close(from_child[0]);
	mirror_fini(&m);
}

Test(range, fork_makes_written_pages_cow_and_a_write_request_breaks_it)
{
	fork_cow();
}

/* AnonHugePages of the mapping containing addr, in kB, from /proc/self/smaps. */
static long anon_huge_kb(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false;
	long kb = -1;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;

		if (sscanf(line, "%llx-%llx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
		else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

Test(range, a_transparent_huge_page_reports_order_9)
{
	const size_t huge = 2UL << 20, npages = huge / PS;
	char *raw = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = (char *)(((uintptr_t)raw + huge - 1) & ~(huge - 1));
	uint64_t *pfns = calloc(npages, sizeof(*pfns));
	char setting[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	struct mirror m;
	long kb;

	cr_assert_neq(raw, MAP_FAILED);
	if (f) {
		if (!fgets(setting, sizeof(setting), f))
			setting[0] = '\0';
		fclose(f);
	}
	cr_assert_eq(madvise(p, huge, MADV_HUGEPAGE), 0);
	memset(p, 1, huge);
	mirror_init(&m, (uintptr_t)p, huge);
	cr_assert_eq(fault(&m, p, npages, pfns, 0, 0), 0);
	kb = anon_huge_kb(p);
	for (size_t i = 0; i < npages; i++) {
		cr_assert_eq(pfns[i] & FLAGS_OUT, HMM_PFN_VALID | HMM_PFN_WRITE, "page %zu", i);
		cr_assert_eq(hmm_pfn_to_addr(pfns[i]), p + i * PS, "page %zu", i);
	}
	if (kb >= 2048) {
		for (size_t i = 0; i < npages; i++)
			cr_assert_eq(hmm_pfn_to_map_order(pfns[i]), 9, "page %zu of a THP", i);
	} else {
		cr_log_warn("no THP was made (AnonHugePages %ld kB, enabled: %s): order not checked",
			    kb, setting);
	}
	mirror_fini(&m);
	free(pfns);
}

Test(range, pages_outside_a_thp_report_order_0)
{
	enum { N = 4 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;

	memset(p, 1, N * PS);
	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(hmm_pfn_to_map_order(pfns[i]), 0);
	mirror_fini(&m);
}

Test(range, an_invalidation_after_read_begin_makes_it_ebusy_until_read_begin_again)
{
	enum { N = 4 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m;
	struct hmm_notifier_range nr = {
		.start = (uintptr_t)p + PS, .end = (uintptr_t)p + 2 * PS, .event = HMM_NOTIFY_CLEAR,
	};
	struct hmm_range r = {
		.start = (uintptr_t)p, .end = (uintptr_t)p + N * PS, .hmm_pfns = pfns,
		.default_flags = HMM_PFN_REQ_WRITE,
	};

	mirror_init(&m, (uintptr_t)p, N * PS);
	r.notifier = m.sub;
	r.notifier_seq = hmm_interval_read_begin(m.sub);
	hmm__invalidate_start(&nr);
	hmm__invalidate_end(&nr);
	pthread_mutex_lock(&m.lock);
	cr_assert_eq(m.calls, 1);
	pthread_mutex_unlock(&m.lock);
	cr_assert_eq(hmm_range_fault(&r), -EBUSY);
	/* -EBUSY is checked before faulting: nothing was faulted in. */
	r.default_flags = 0;
	r.notifier_seq = hmm_interval_read_begin(m.sub);
	cr_assert_eq(hmm_range_fault(&r), 0);
	expect_all(pfns, p, N, 0, "after -EBUSY");
	r.default_flags = HMM_PFN_REQ_WRITE;
	cr_assert_eq(hmm_range_fault(&r), 0);
	expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "after read_begin again");
	/* The snapshot alone (no fault) is also -EBUSY once invalidated. */
	r.default_flags = 0;
	hmm__invalidate_start(&nr);
	hmm__invalidate_end(&nr);
	cr_assert_eq(hmm_range_fault(&r), -EBUSY);
	mirror_fini(&m);
}

/* An invalidation from another thread while the range fault runs. */
struct racer {
	struct hmm_notifier_range nr;
	bool stop; /* atomic */
};

static void *race_invalidate(void *arg)
{
	struct racer *rc = arg;

	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		hmm__invalidate_start(&rc->nr);
		hmm__invalidate_end(&rc->nr);
	}
	return NULL;
}

Test(range, concurrent_invalidations_give_ebusy_or_a_result_that_read_retry_accepts)
{
	enum { N = 256 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t *pfns = calloc(N, sizeof(*pfns));
	struct racer rc = { .nr = { .start = (uintptr_t)p, .end = (uintptr_t)p + PS } };
	unsigned busy = 0, ok = 0;
	struct mirror m;
	pthread_t t;

	memset(p, 1, N * PS);
	mirror_init(&m, (uintptr_t)p, N * PS);
	cr_assert_eq(pthread_create(&t, NULL, race_invalidate, &rc), 0);
	for (int i = 0; i < 2000 && (busy == 0 || ok == 0); i++) {
		uint64_t seq = hmm_interval_read_begin(m.sub);
		struct hmm_range r = {
			.notifier = m.sub, .notifier_seq = seq, .start = (uintptr_t)p,
			.end = (uintptr_t)p + N * PS, .hmm_pfns = pfns,
		};
		int err = hmm_range_fault(&r);

		cr_assert(err == 0 || err == -EBUSY, "err %d", err);
		if (err == -EBUSY) {
			busy++;
			cr_assert(hmm_interval_check_retry(m.sub, seq));
		} else {
			pthread_mutex_lock(&m.lock);
			if (!hmm_interval_read_retry(m.sub, seq))
				ok++;
			pthread_mutex_unlock(&m.lock);
		}
	}
	__atomic_store_n(&rc.stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_log_info("%u -EBUSY, %u accepted", busy, ok);
	cr_assert_gt(busy, 0, "never saw -EBUSY under constant invalidation");
	mirror_fini(&m);
	free(pfns);
}

Test(range, bad_arguments_are_einval)
{
	enum { N = 4 };
	char *p = map(N + 2, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t pfns[N + 2];
	struct mirror m;
	struct hmm_range r;
	const struct { uint64_t start, end; const char *what; } bad[] = {
		{ (uintptr_t)p + PS + 1, (uintptr_t)p + 2 * PS, "misaligned start" },
		{ (uintptr_t)p + PS, (uintptr_t)p + 2 * PS + 8, "misaligned end" },
		{ (uintptr_t)p + 2 * PS, (uintptr_t)p + 2 * PS, "empty" },
		{ (uintptr_t)p + 2 * PS, (uintptr_t)p + PS, "end before start" },
		{ (uintptr_t)p, (uintptr_t)p + 2 * PS, "starts before the notifier's range" },
		{ (uintptr_t)p + PS, (uintptr_t)p + (N + 2) * PS, "ends after the notifier's range" },
	};

	mirror_init(&m, (uintptr_t)p + PS, N * PS);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = (struct hmm_range){ .notifier = m.sub, .notifier_seq = hmm_interval_read_begin(m.sub),
					.start = bad[i].start, .end = bad[i].end, .hmm_pfns = pfns };
		cr_assert_eq(hmm_range_fault(&r), -EINVAL, "%s", bad[i].what);
	}
	r = (struct hmm_range){ .notifier = m.sub, .notifier_seq = hmm_interval_read_begin(m.sub),
				.start = (uintptr_t)p + PS, .end = (uintptr_t)p + 2 * PS };
	cr_assert_eq(hmm_range_fault(&r), -EINVAL, "NULL hmm_pfns");
	r.hmm_pfns = pfns;
	r.notifier = NULL;
	cr_assert_eq(hmm_range_fault(&r), -EINVAL, "NULL notifier");
	cr_assert_eq(hmm_range_fault(NULL), -EINVAL, "NULL range");
	r.notifier = m.sub;
	cr_assert_eq(hmm_range_fault(&r), 0, "the good range");
	mirror_fini(&m);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

Test(range, a_1024_page_range_of_present_data_is_all_valid_and_writable)
{
	enum { N = 1024, ROUNDS = 21 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uint64_t *pfns = calloc(N, sizeof(*pfns)), ns[ROUNDS];
	struct mirror m;

	memset(p, 1, N * PS);
	mirror_init(&m, (uintptr_t)p, N * PS);
	for (int k = 0; k < ROUNDS; k++) {
		uint64_t t0 = now_ns();

		cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), 0);
		ns[k] = now_ns() - t0;
		expect_all(pfns, p, N, HMM_PFN_VALID | HMM_PFN_WRITE, "present data");
	}
	qsort(ns, ROUNDS, sizeof(ns[0]), cmp_u64);
	cr_log_info("1024 present pages: median %llu us, min %llu us",
		    (unsigned long long)ns[ROUNDS / 2] / 1000, (unsigned long long)ns[0] / 1000);
	mirror_fini(&m);
	free(pfns);
}

/*
 * The fallbacks of older kernels, forced on this one: parsing
 * /proc/self/maps (mask 1), pread of /proc/self/pagemap only (mask 2), both (3).
 */
ParameterizedTestParameters(range, the_fallbacks_give_the_same_answers)
{
	static unsigned masks[] = { 1, 2, 3 };

	return cr_make_param_array(unsigned, masks, sizeof(masks) / sizeof(masks[0]));
}

ParameterizedTest(unsigned *mask, range, the_fallbacks_give_the_same_answers)
{
	enum { N = 6 };
	char *p = map(N, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	char *ro = map(2, PROT_READ, MAP_PRIVATE);
	uint64_t pfns[N];
	struct mirror m, mro;
	size_t len;
	char *vvar = find_mapping(" [vvar]", &len);

	hmm__range_force_fallback(*mask);
	mirror_init(&m, (uintptr_t)p, N * PS);
	mirror_init(&mro, (uintptr_t)ro, 2 * PS);
	p[0] = 1;
	cr_assert_eq(mprotect(p + 4 * PS, PS, PROT_NONE), 0);
	cr_assert_eq(munmap(p + 5 * PS, PS), 0);
	cr_assert_eq(fault(&m, p, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++)
		expect_pfn(pfns[i], p + i * PS,
			   i == 0 ? HMM_PFN_VALID | HMM_PFN_WRITE : i >= 4 ? HMM_PFN_ERROR : 0,
			   "snapshot", i);
	cr_assert_eq(fault(&m, p, N, pfns, HMM_PFN_REQ_FAULT, 0), -EFAULT);
	cr_assert_eq(fault(&m, p, 2, pfns, HMM_PFN_REQ_FAULT, 0), 0);
	/* pagemap's words alone do not tell the zero page (PAGEMAP_SCAN does). */
	expect_pfn(pfns[1], p + PS, *mask & 2 ? HMM_PFN_VALID : HMM_PFN_VALID | HMM_PFN_ZERO,
		   "zero page", 1);
	cr_assert_eq(fault(&m, p, 4, pfns, HMM_PFN_REQ_WRITE, 0), 0);
	expect_all(pfns, p, 4, HMM_PFN_VALID | HMM_PFN_WRITE, "write fault");
	cr_assert_eq(fault(&mro, ro, 2, pfns, HMM_PFN_REQ_WRITE, 0), -EPERM);
	if (vvar) {
		struct mirror mv;

		mirror_init(&mv, (uintptr_t)vvar, PS);
		cr_assert_eq(fault(&mv, vvar, 1, pfns, 0, 0), 0);
		expect_pfn(pfns[0], vvar, HMM_PFN_ERROR, "[vvar]", 0);
		mirror_fini(&mv);
	}
	mirror_fini(&mro);
	mirror_fini(&m);
	fork_cow();
}
