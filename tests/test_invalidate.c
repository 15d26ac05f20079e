/* SPDX-License-Identifier: MIT */
/*
 * test_invalidate.c - the interposed libc calls that change the address
 * space (libhmm/invalidate.c), through the real libhmm.so: each one calls
 * the notifiers of the range it changes, with the right event, before the
 * change (the callback still reads the old contents, which would crash
 * after an unmap), and arguments the kernel refuses invalidate nothing.
 */
#define _GNU_SOURCE
#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL

/* What the callback saw, and whether the memory still held its data then. */
static struct {
	unsigned calls;
	struct hmm_notifier_range last;
	const volatile unsigned char *probe; /* read in the callback if set */
	unsigned char probed;
} seen;

static bool on_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			  uint64_t cur_seq)
{
	hmm_interval_set_seq(sub, cur_seq);
	seen.calls++;
	seen.last = *r;
	if (seen.probe)
		seen.probed = *seen.probe;
	return true;
}

static const struct hmm_interval_notifier_ops ops = { .invalidate = on_invalidate };

/* n pages of private memory filled with 0x5a, watched by a notifier. */
static unsigned char *watched(size_t n, struct hmm_interval_notifier **sub)
{
	unsigned char *p = mmap(NULL, n * PS, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, 0x5a, n * PS);
	cr_assert_eq(hmm_interval_notifier_insert((uintptr_t)p, n * PS, &ops, NULL, sub), 0);
	memset(&seen, 0, sizeof(seen));
	seen.probe = p;
	return p;
}

static void expect_seen(unsigned calls, const void *start, size_t len, enum hmm_notify_event ev)
{
	cr_assert_eq(seen.calls, calls, "%u invalidations, expected %u", seen.calls, calls);
	cr_assert_eq(seen.last.start, (uintptr_t)start);
	cr_assert_eq(seen.last.end, (uintptr_t)start + len);
	cr_assert_eq(seen.last.event, ev, "event %d, expected %d", seen.last.event, ev);
	cr_assert_eq(seen.probed, 0x5a, "the callback ran after the change");
}

Test(invalidate, munmap_invalidates_the_rounded_range_before_unmapping)
{
	struct hmm_interval_notifier *sub;
	unsigned char *p = watched(4, &sub);

	cr_assert_eq(munmap(p, 2 * PS - 100), 0); /* two pages, rounded up */
	expect_seen(1, p, 2 * PS, HMM_NOTIFY_UNMAP);
	cr_assert_eq(munmap(p + 1, PS), -1, "a misaligned munmap fails");
	cr_assert_eq(errno, EINVAL);
	cr_assert_eq(munmap(p + 2 * PS, 0), -1);
	cr_assert_eq(seen.calls, 1, "refused arguments invalidate nothing");
	hmm_interval_notifier_remove(sub);
	munmap(p + 2 * PS, 2 * PS);
}

Test(invalidate, mprotect_and_madvise_dontneed_invalidate_and_harmless_advice_does_not)
{
	struct hmm_interval_notifier *sub;
	unsigned char *p = watched(4, &sub);

	cr_assert_eq(mprotect(p + PS, PS, PROT_READ), 0);
	expect_seen(1, p + PS, PS, HMM_NOTIFY_PROTECTION_VMA);
	cr_assert_eq(madvise(p, 4 * PS, MADV_WILLNEED), 0);
	cr_assert_eq(seen.calls, 1, "MADV_WILLNEED changes no mapping");
	seen.probe = p + 2 * PS;
	cr_assert_eq(madvise(p + 2 * PS, 2 * PS, MADV_DONTNEED), 0);
	expect_seen(2, p + 2 * PS, 2 * PS, HMM_NOTIFY_CLEAR);
	cr_assert_eq(p[2 * PS], 0, "the pages were dropped after the callback");
	seen.probe = p;
	cr_assert_eq(madvise(p, PS, MADV_FREE), 0);
	expect_seen(3, p, PS, HMM_NOTIFY_CLEAR);
	hmm_interval_notifier_remove(sub);
	munmap(p, 4 * PS);
}

Test(invalidate, mremap_invalidates_the_old_range_and_the_fixed_target)
{
	struct hmm_interval_notifier *sub, *tsub;
	unsigned char *p = watched(2, &sub), *q, *target;

	/* Another mapping, watched too, as the target of MREMAP_FIXED. */
	target = mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(target, MAP_FAILED);
	cr_assert_eq(hmm_interval_notifier_insert((uintptr_t)target, 2 * PS, &ops, NULL, &tsub),
		     0);
	q = mremap(p, 2 * PS, 2 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, target);
	cr_assert_eq(q, target);
	cr_assert_eq(seen.calls, 2, "the old range and the target");
	cr_assert_eq(q[0], 0x5a, "the data moved");
	hmm_interval_notifier_remove(sub);
	hmm_interval_notifier_remove(tsub);
	munmap(q, 2 * PS);
}

Test(invalidate, mmap_fixed_over_a_range_invalidates_it_and_noreplace_does_not)
{
	struct hmm_interval_notifier *sub;
	unsigned char *p = watched(2, &sub);

	cr_assert_eq(mmap(p, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			  -1, 0), MAP_FAILED, "NOREPLACE over a mapping fails");
	cr_assert_eq(seen.calls, 0);
	cr_assert_eq(mmap(p, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), p);
	expect_seen(1, p, PS, HMM_NOTIFY_UNMAP);
	cr_assert_eq(p[0], 0, "replaced by fresh memory");
	hmm_interval_notifier_remove(sub);
	munmap(p, 2 * PS);
}

Test(invalidate, shrinking_the_heap_invalidates_what_goes)
{
	struct hmm_interval_notifier *sub;
	unsigned char *top, *p;

	top = sbrk(0);
	cr_assert_neq(top, (void *)-1);
	/* Grow to a page boundary plus two pages, then give the two back. */
	p = (unsigned char *)(((uintptr_t)top + PS - 1) & ~(PS - 1));
	cr_assert_neq(sbrk((p - top) + 2 * PS), (void *)-1);
	memset(p, 0x5a, 2 * PS);
	cr_assert_eq(hmm_interval_notifier_insert((uintptr_t)p, 2 * PS, &ops, NULL, &sub), 0);
	memset(&seen, 0, sizeof(seen));
	seen.probe = p + PS;
	cr_assert_neq(sbrk(-(intptr_t)PS), (void *)-1);
	expect_seen(1, p + PS, PS, HMM_NOTIFY_UNMAP);
	seen.probe = p;
	cr_assert_eq(brk(p), 0);
	expect_seen(2, p, PS, HMM_NOTIFY_UNMAP);
	hmm_interval_notifier_remove(sub);
}

Test(invalidate, shmdt_invalidates_the_whole_segment)
{
	struct hmm_interval_notifier *sub;
	int id = shmget(IPC_PRIVATE, 3 * PS, IPC_CREAT | 0600);
	unsigned char *p;

	cr_assert_geq(id, 0);
	p = shmat(id, NULL, 0);
	cr_assert_neq(p, (void *)-1);
	shmctl(id, IPC_RMID, NULL);
	memset(p, 0x5a, 3 * PS);
	cr_assert_eq(hmm_interval_notifier_insert((uintptr_t)p, 3 * PS, &ops, NULL, &sub), 0);
	memset(&seen, 0, sizeof(seen));
	seen.probe = p + 2 * PS;
	cr_assert_eq(shmdt(p), 0);
	expect_seen(1, p, 3 * PS, HMM_NOTIFY_UNMAP);
	hmm_interval_notifier_remove(sub);
}

Test(invalidate, fork_write_protects_everything_in_the_parent_before_the_child_exists)
{
	struct hmm_interval_notifier *sub;
	unsigned char *p = watched(1, &sub);
	int status;
	pid_t pid;

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(seen.calls == 1 && seen.last.event == HMM_NOTIFY_PROTECTION_PAGE ? 0 : 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child did not inherit a completed PROTECTION_PAGE invalidation");
	cr_assert_eq(seen.calls, 1);
	cr_assert_eq(seen.last.event, HMM_NOTIFY_PROTECTION_PAGE);
	cr_assert_leq(seen.last.start, (uintptr_t)p);
	cr_assert_geq(seen.last.end, (uintptr_t)p + PS);
	hmm_interval_notifier_remove(sub);
	munmap(p, PS);
}
