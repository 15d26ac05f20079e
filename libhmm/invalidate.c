/* SPDX-License-Identifier: MIT */
/*
 * Invalidation sources, part one: the libc entry points that change the
 * address space, interposed.  A program linked with libhmm calls these
 * instead of libc's; each tells the interval notifiers about the change
 * before making it (hmm__invalidate_start), makes it through libc, and
 * ends the invalidation afterwards, as the kernel brackets a change with
 * invalidate_range_start/end:
 *
 *   munmap                         HMM_NOTIFY_UNMAP over the range
 *   mmap with MAP_FIXED            HMM_NOTIFY_UNMAP over what it replaces
 *   mremap                         HMM_NOTIFY_UNMAP over the old range and,
 *                                  with MREMAP_FIXED, over the target
 *   mprotect, pkey_mprotect        HMM_NOTIFY_PROTECTION_VMA
 *   madvise DONTNEED, DONTNEED_LOCKED, FREE, REMOVE, PAGEOUT
 *                                  HMM_NOTIFY_CLEAR
 *   brk, sbrk shrinking the heap   HMM_NOTIFY_UNMAP over what goes
 *   shmdt                          HMM_NOTIFY_UNMAP over the segment
 *   fork                           HMM_NOTIFY_PROTECTION_PAGE over the whole
 *                                  address space (copy-on-write), ended in
 *                                  the parent; the child has no notifiers
 *
 * Arguments the kernel would refuse (misaligned, empty, wrapping) go
 * straight to libc, which refuses them and changes nothing.  There is no
 * shortcut when nobody subscribes: a subscription inserted while a change
 * is under way must still see it, and an invalidation nobody hears costs
 * two uncontended lock round trips, far less than the system call.
 *
 * What this cannot see: system calls made without these entry points
 * (syscall(2), and libc's own internal calls, such as free() giving a large
 * block back with munmap).  Those are for the userfaultfd event source
 * (uffd.c), late, and for private anonymous memory only: shared and file
 * mappings are covered here and nowhere else.  Each wrapper announces its
 * change to that source around the real call (hmm__cpufault_own_begin),
 * so that the event the change raises is not invalidated a second time,
 * late: by then the range may hold a new mapping with pages on a device.
 *
 * These wrappers are in libhmm.so only, never in the core library that the
 * hmmfs daemon links.
 */
#define _GNU_SOURCE
#include "config.h"
#include "hmm-internal.h"
#include "interposed.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

/* The top of the user address space that notifiers can subscribe to. */
#define USER_TOP (1ULL << 47)

static struct {
	pthread_once_t once;
	HMM__INTERPOSED(HMM__INTERPOSED_FIELD)
} real = { .once = PTHREAD_ONCE_INIT };

/*
 * The C library's name.  RTLD_NEXT finds nothing when libhmm comes after
 * the C library in the global scope, as it does when it is loaded as the
 * dependency of a preloaded object (libhmm_dmirror.so): then ask the C
 * library itself.
 */
static void *next_symbol(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	Dl_info info;
	void *libc;

	if (f)
		return f;
	if (!dladdr((void *)getpid, &info) || !info.dli_fname)
		return NULL;
	libc = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
	if (!libc)
		return NULL;
	/* NULL if libc lacks it (pkey_mprotect before glibc 2.27): the
	 * wrapper then fails with ENOSYS, as a missing system call would.
	 * The handle stays open: the library is never unloaded anyway. */
	return dlsym(libc, name);
}

static void resolve(void)
{
#define RESOLVE(name) real.name = next_symbol(#name);
	HMM__INTERPOSED(RESOLVE)
#undef RESOLVE
}

#define REAL(fn) (pthread_once(&real.once, resolve), real.fn)

static uint64_t page_mask(void)
{
	return hmm__sys_page_size() - 1;
}

/*
 * The page-aligned range [addr, addr + len) as the kernel would act on it,
 * or false if the kernel would refuse it (then nothing is invalidated).
 */
static bool user_range(const void *addr, size_t len, struct hmm_notifier_range *r,
		       enum hmm_notify_event event)
{
	uint64_t start = (uint64_t)(uintptr_t)addr, end;

	if (!len || (start & page_mask()))
		return false;
	end = start + ((len + page_mask()) & ~page_mask());
	if (end < start || end > USER_TOP)
		return false;
	*r = (struct hmm_notifier_range){ start, end, event, NULL };
	return true;
}

HMM_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

HMM_EXPORT int munmap(void *addr, size_t len)
{
	struct hmm_notifier_range r;
	int ret, own;

	if (!REAL(munmap))
		return errno = ENOSYS, -1;
	if (!user_range(addr, len, &r, HMM_NOTIFY_UNMAP))
		return real.munmap(addr, len);
	hmm__invalidate_start(&r);
	own = hmm__cpufault_own_begin(r.start, r.end);
	ret = real.munmap(addr, len);
	hmm__cpufault_own_end(own);
	hmm__invalidate_end(&r);
	return ret;
}

HMM_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct hmm_notifier_range r;
	void *ret;
	int own;

	if (!REAL(mmap))
		return errno = ENOSYS, MAP_FAILED;
	/* Only MAP_FIXED replaces what is there; MAP_FIXED_NOREPLACE fails instead. */
	if (!(flags & MAP_FIXED) ||
	    !user_range(addr, len, &r, HMM_NOTIFY_UNMAP))
		return real.mmap(addr, len, prot, flags, fd, off);
	hmm__invalidate_start(&r);
	own = hmm__cpufault_own_begin(r.start, r.end);
	ret = real.mmap(addr, len, prot, flags, fd, off);
	hmm__cpufault_own_end(own);
	hmm__invalidate_end(&r);
	return ret;
}

HMM_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	struct hmm_notifier_range r, t;
	bool have_r, have_t = false;
	void *target = NULL, *ret;
	int own_r, own_t;
	va_list ap;

	if (flags & MREMAP_FIXED) {
		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	if (!REAL(mremap))
		return errno = ENOSYS, MAP_FAILED;

	/* The pages leave the old range (all of it: growing may move it, and
	 * shrinking unmaps its tail); with MREMAP_DONTUNMAP it stays mapped but
	 * empty.  old_len 0 duplicates a shared mapping: nothing leaves. */
	have_r = old_len && user_range(old, old_len, &r, HMM_NOTIFY_UNMAP);
	/* A moved range loses its userfaultfd registration: device pages of
	 * anonymous memory in it come back first (migrate.c). */
	if (have_r)
		hmm__anon_evict(r.start, r.end);
	if (flags & MREMAP_FIXED)
		have_t = user_range(target, new_len, &t, HMM_NOTIFY_UNMAP);
	if (have_r)
		hmm__invalidate_start(&r);
	if (have_t)
		hmm__invalidate_start(&t);
	own_r = have_r ? hmm__cpufault_own_begin(r.start, r.end) : -1;
	own_t = have_t ? hmm__cpufault_own_begin(t.start, t.end) : -1;
	ret = real.mremap(old, old_len, new_len, flags, target);
	hmm__cpufault_own_end(own_t);
	hmm__cpufault_own_end(own_r);
	if (have_t)
		hmm__invalidate_end(&t);
	if (have_r)
		hmm__invalidate_end(&r);
	return ret;
}

HMM_EXPORT int mprotect(void *addr, size_t len, int prot)
{
	struct hmm_notifier_range r;
	int ret;

	if (!REAL(mprotect))
		return errno = ENOSYS, -1;
	if (!user_range(addr, len, &r, HMM_NOTIFY_PROTECTION_VMA))
		return real.mprotect(addr, len, prot);
	hmm__invalidate_start(&r);
	ret = real.mprotect(addr, len, prot);
	hmm__invalidate_end(&r);
	return ret;
}

HMM_EXPORT int pkey_mprotect(void *addr, size_t len, int prot, int pkey)
{
	struct hmm_notifier_range r;
	int ret;

	if (!REAL(pkey_mprotect))
		return errno = ENOSYS, -1;
	if (!user_range(addr, len, &r, HMM_NOTIFY_PROTECTION_VMA))
		return real.pkey_mprotect(addr, len, prot, pkey);
	hmm__invalidate_start(&r);
	ret = real.pkey_mprotect(addr, len, prot, pkey);
	hmm__invalidate_end(&r);
	return ret;
}

/* The advice values that drop pages from the mapping. */
static bool advice_clears(int advice)
{
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif
	return advice == MADV_DONTNEED || advice == MADV_DONTNEED_LOCKED ||
	       advice == MADV_FREE || advice == MADV_REMOVE || advice == MADV_PAGEOUT;
}

HMM_EXPORT int madvise(void *addr, size_t len, int advice)
{
	struct hmm_notifier_range r;
	int ret, own;

	if (!REAL(madvise))
		return errno = ENOSYS, -1;
	if (!advice_clears(advice) ||
	    !user_range(addr, len, &r, HMM_NOTIFY_CLEAR))
		return real.madvise(addr, len, advice);
	hmm__invalidate_start(&r);
	own = hmm__cpufault_own_begin(r.start, r.end);
	ret = real.madvise(addr, len, advice);
	hmm__cpufault_own_end(own);
	hmm__invalidate_end(&r);
	return ret;
}

/* Shrinking the heap from cur to to unmaps [to, cur), rounded to pages. */
static bool heap_shrink(uint64_t cur, uint64_t to, struct hmm_notifier_range *r)
{
	uint64_t start = (to + page_mask()) & ~page_mask();
	uint64_t end = (cur + page_mask()) & ~page_mask();

	if (to >= cur || start >= end)
		return false;
	*r = (struct hmm_notifier_range){ start, end, HMM_NOTIFY_UNMAP, NULL };
	return true;
}

HMM_EXPORT int brk(void *addr)
{
	struct hmm_notifier_range r;
	void *cur;
	int ret, own;

	if (!REAL(brk) || !real.sbrk)
		return errno = ENOSYS, -1;
	cur = real.sbrk(0);
	if (cur == (void *)-1 ||
	    !heap_shrink((uint64_t)(uintptr_t)cur, (uint64_t)(uintptr_t)addr, &r))
		return real.brk(addr);
	hmm__invalidate_start(&r);
	own = hmm__cpufault_own_begin(r.start, r.end);
	ret = real.brk(addr);
	hmm__cpufault_own_end(own);
	hmm__invalidate_end(&r);
	return ret;
}

HMM_EXPORT void *sbrk(intptr_t increment)
{
	struct hmm_notifier_range r;
	void *cur, *ret;
	int own;

	if (!REAL(sbrk))
		return errno = ENOSYS, (void *)-1;
	if (increment >= 0)
		return real.sbrk(increment);
	cur = real.sbrk(0);
	if (cur == (void *)-1 ||
	    !heap_shrink((uint64_t)(uintptr_t)cur, (uint64_t)(uintptr_t)cur + (uint64_t)increment,
			 &r))
		return real.sbrk(increment);
	hmm__invalidate_start(&r);
	own = hmm__cpufault_own_begin(r.start, r.end);
	ret = real.sbrk(increment);
	hmm__cpufault_own_end(own);
	hmm__invalidate_end(&r);
	return ret;
}

/*
 * The end of the System V segment attached at addr, from /proc/self/maps:
 * its first VMA and the ones right after it with the same inode (the
 * segment's shmid; mprotect of a part splits it into several VMAs).
 * Return: 0 if nothing is mapped at addr.
 */
static uint64_t mapping_end(uint64_t addr)
{
	unsigned long long lo, hi, off, inode, first_inode = 0;
	unsigned maj, min;
	uint64_t end = 0;
	char line[512], perms[8];
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &lo, &hi, perms, &off, &maj, &min,
			   &inode) != 7)
			continue;
		if (!end && lo == addr) {
			end = hi;
			first_inode = inode;
		} else if (end && lo == end && inode == first_inode && inode) {
			end = hi;
		} else if (end) {
			break;
		}
	}
	fclose(f);
	return end;
}

HMM_EXPORT int shmdt(const void *addr)
{
	struct hmm_notifier_range r;
	uint64_t start = (uint64_t)(uintptr_t)addr, end;
	int ret;

	if (!REAL(shmdt))
		return errno = ENOSYS, -1;
	if ((start & page_mask()) || !(end = mapping_end(start)))
		return real.shmdt(addr);
	r = (struct hmm_notifier_range){ start, end, HMM_NOTIFY_UNMAP, NULL };
	hmm__invalidate_start(&r);
	ret = real.shmdt(addr);
	hmm__invalidate_end(&r);
	return ret;
}

HMM_EXPORT pid_t fork(void)
{
	struct hmm_notifier_range r = { 0, USER_TOP, HMM_NOTIFY_PROTECTION_PAGE, NULL };
	pid_t pid;
	int own;

	if (!REAL(fork))
		return errno = ENOSYS, -1;
	/* The child has no userfaultfd registration: device pages of
	 * anonymous memory come back first, or the child would read zeros. */
	hmm__anon_evict(0, USER_TOP);
	/* Every private writable page becomes copy-on-write in the parent:
	 * devices must drop their write access first, as the kernel makes
	 * them do in copy_page_range. */
	hmm__invalidate_start(&r);
	/* Its UFFD_EVENT_FORK, if any, is this invalidation already. */
	own = hmm__cpufault_own_begin(r.start, r.end);
	pid = real.fork();
	if (pid != 0) {
		hmm__cpufault_own_end(own);
		hmm__invalidate_end(&r);
	}
	/* In the child, notifier.c's fork handler emptied the address space. */
	return pid;
}
