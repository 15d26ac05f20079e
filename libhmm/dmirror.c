/* SPDX-License-Identifier: MIT */
/*
 * dmirror.c - libhmm_dmirror.so: Linux's HMM test driver (lib/test_hmm.c,
 * "dmirror") in user space, served by libhmm's devices, so that a program
 * written against /dev/hmm_dmirror0..3 and the HMM_DMIRROR_* ioctls
 * (hmm_dmirror.h) runs unmodified with LD_PRELOAD=libhmm_dmirror.so.
 *
 * What is interposed.  open and openat (and their 64-bit and fortified
 * forms) of "/dev/hmm_dmirrorN", N from 0 to 3, give a descriptor of a
 * memfd named after the device, which the shim records; ioctl, mmap and
 * close of such a descriptor are served here, every other call goes on to
 * the next definition (libhmm's interposers, then the C library).
 *
 * libhmm's own interposers.  A program that does not link libhmm gets it
 * as the shim's dependency, which the dynamic linker puts after the C
 * library in the global scope: the program's munmap, mprotect, fork...
 * would reach the C library's definitions first, and no device would hear
 * of them.  So the shim defines each function libhmm interposes
 * (interposed.h's list) and passes the call to libhmm's definition, found
 * in libhmm itself (RTLD_NEXT would find the C library's).
 *
 * The devices.  Device N is made at its first open and lives as long as
 * the process, as the driver's devices live as long as the module: an
 * embedded device (0 and 1 private, 2 and 3 coherent) with
 * HMM_DMIRROR_MEMORY bytes (default 1 GiB, reserved only when used), or,
 * when HMM_DMIRROR_MOUNT names a directory of an hmmfs mount, the mount's
 * device N (hmm_device_attach()).  Its mirror is made at the first open and
 * destroyed at the last close; the driver makes one per open file, which
 * only differs in that two descriptors of one device in one process share
 * a page table (and a faults count).  Closing a descriptor brings every
 * page of its device back to host RAM, as the driver's release does.
 *
 * The commands, as the driver does them (lib/test_hmm.c; the ABI and its
 * observable behaviour are in PLATFORM.md):
 *   READ, WRITE        hmm_mirror_read/write through the mirror's page
 *                      table; faults is the mirror's count of fault rounds.
 *   MIGRATE_TO_DEV     mapping by mapping (-EINVAL for a hole or an
 *                      unreadable one), at most 512 pages a round: the
 *                      three phases with this device's pages (FLAGS
 *                      FAIL_ALLOC: see allocation_fails()); then every
 *                      page must be on the device (-ENOENT) and is read
 *                      back into ptr, as the driver reads its page table.
 *   MIGRATE_TO_SYS     the three phases selecting this device's pages, to
 *                      pages of host RAM; cpages counts the pages moved.
 *   SNAPSHOT           hmm_range_fault without faults, owner this device,
 *                      turned into one HMM_DMIRROR_PROT_* byte per page.
 *   EXCLUSIVE          hmm_make_device_exclusive, then the read back.
 *   CHECK_EXCLUSIVE    -EPERM while any page is still held exclusively.
 *   RELEASE            hmm_device_evict: every page of the device back.
 *   FLAGS              npages is the flags (FAIL_ALLOC).
 * The command is read and written back with process_vm_readv/writev, so a
 * bad pointer gives EFAULT instead of a crash; it is written back only on
 * success, with cpages and faults.
 *
 * fork().  A child inherits the descriptors but not the devices (libhmm's
 * devices are the parent's threads): a command on an inherited descriptor
 * fails with ENODEV, where the driver would still act on the parent's
 * memory; a child opens the device again, as the kernel's tests do.
 *
 * Locking: shim.lock (a leaf) guards the tables; a command runs without it,
 * holding its device busy, and the last close waits for the device's
 * commands before it destroys the mirror.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hmm.h"
#include "hmm_dmirror.h"
#include "interposed.h"

#define EXPORT __attribute__((visibility("default")))

/* The C library's own names, for calls made before the shim is ready. */
extern void *__sbrk(intptr_t increment);
extern pid_t __fork(void);

#define NDEVICES 4
#define MAX_FILES 256
#define ROUND_PAGES 512 /* pages a migration round handles, as the driver's */
#define DEFAULT_MEMORY ((uint64_t)1 << 30)
#define PATH_PREFIX "/dev/hmm_dmirror"

struct device {
	struct hmm_device *dev;
	struct hmm_mirror *mirror;   /* while opens > 0 */
	bool coherent;
	pid_t pid;                   /* the process that made dev */
	unsigned opens;              /* descriptors open */
	unsigned busy;               /* commands running */
};

struct file {
	int fd;                      /* -1: free */
	unsigned index;              /* its device */
	pid_t pid;                   /* the process that opened it */
	bool fail_alloc;             /* FLAGS FAIL_ALLOC, until used */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t idle;         /* a device's busy fell to 0 */
	struct device devices[NDEVICES];
	struct file files[MAX_FILES];
	unsigned nfiles;             /* atomic: files in use, for the fast path */
} shim = { .lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER };

/* ------------------------------------------------------- the next definitions */

static struct {
	int (*open)(const char *, int, ...);
	int (*openat)(int, const char *, int, ...);
	int (*close)(int);
	int (*ioctl)(int, unsigned long, ...);
	/* libhmm's (see the top) */
	HMM__INTERPOSED(HMM__INTERPOSED_FIELD)
} next_fns;

/* name in handle (RTLD_NEXT: after the shim). */
static void *next_of(void *handle, const char *name)
{
	void *f = dlsym(handle, name);

	if (!f) {
		fprintf(stderr, "libhmm_dmirror: no definition of %s to pass calls on to\n", name);
		abort();
	}
	return f;
}

/*
 * Set by the shim's constructor once the next definitions are known.
 * Before, other libraries' constructors (the sanitizers' runtimes, libnuma)
 * already map memory and open files through us; looking the definitions up
 * then would call dlopen inside a sanitizer's own initialization, which
 * waits for itself.  Those calls go straight to the system (raw below): no
 * device exists yet, so no mirror can miss them.
 */
static bool ready;

static bool is_ready(void)
{
	return __atomic_load_n(&ready, __ATOMIC_ACQUIRE);
}

#define NEXT(fn) (next_fns.fn)

static void find_next(void)
{
	Dl_info info;
	void *libhmm = NULL;

	/* libhmm's definitions, from libhmm itself: RTLD_NEXT would find the
	 * C library's first (see the top). */
	if (dladdr((void *)hmm_version, &info) && info.dli_fname)
		libhmm = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
	if (!libhmm) {
		fprintf(stderr, "libhmm_dmirror: libhmm is not loaded: %s\n", dlerror());
		abort();
	}
	next_fns.open = next_of(RTLD_NEXT, "open");
	next_fns.openat = next_of(RTLD_NEXT, "openat");
	next_fns.close = next_of(RTLD_NEXT, "close");
	next_fns.ioctl = next_of(RTLD_NEXT, "ioctl");
#define FROM_LIBHMM(name) next_fns.name = next_of(libhmm, #name);
	HMM__INTERPOSED(FROM_LIBHMM)
#undef FROM_LIBHMM
}

/* ------------------------------------------------------------------ tables */

static uint64_t page_size(void)
{
	static uint64_t ps;

	if (!ps)
		ps = (uint64_t)sysconf(_SC_PAGESIZE);
	return ps;
}

/* The device N of "/dev/hmm_dmirrorN", or -1. */
static int device_of_path(const char *path)
{
	size_t n = sizeof(PATH_PREFIX) - 1;

	if (!path || strncmp(path, PATH_PREFIX, n) || path[n] < '0' ||
	    path[n] >= '0' + NDEVICES || path[n + 1])
		return -1;
	return path[n] - '0';
}

/* Context: shim.lock held.  Return: the file of fd, or NULL. */
static struct file *file_of(int fd)
{
	for (unsigned i = 0; i < MAX_FILES; i++)
		if (shim.files[i].fd == fd && fd >= 0)
			return &shim.files[i];
	return NULL;
}

/* A device made by the parent before fork(): the child forgets it (libhmm
 * only frees its copy).  Context: shim.lock held. */
static void forget_inherited(struct device *d)
{
	if (!d->dev || d->pid == getpid())
		return;
	if (d->mirror)
		hmm_mirror_destroy(d->mirror);
	hmm_device_destroy(d->dev);
	*d = (struct device){ 0 };
}

static uint64_t env_memory(void)
{
	const char *s = getenv("HMM_DMIRROR_MEMORY");
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return DEFAULT_MEMORY;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < page_size()) {
		fprintf(stderr, "libhmm_dmirror: HMM_DMIRROR_MEMORY=%s is not a byte count; "
			"using %llu\n", s, (unsigned long long)DEFAULT_MEMORY);
		return DEFAULT_MEMORY;
	}
	return v;
}

/*
 * Set while this thread attaches to a mount's device in device_open() and
 * asks for its type, holding shim.lock: the descriptors used meanwhile (by
 * libhmm's ioctl and close) are never a device's, and looking them up
 * would take shim.lock again.
 */
static __thread bool attaching;

/* Make device index (and its mirror).  Context: shim.lock held.  Return: 0, -errno. */
static int device_open(unsigned index)
{
	struct device *d = &shim.devices[index];
	const char *mount = getenv("HMM_DMIRROR_MOUNT");
	int err = 0;

	forget_inherited(d);
	if (!d->dev) {
		if (mount && *mount) {
			struct hmm_device_info info;

			attaching = true;
			err = hmm_device_attach(mount, index, &d->dev);
			if (!err) {
				int fd = NEXT(open)(mount, O_RDONLY | O_CLOEXEC);

				d->coherent = fd >= 0 && !hmm_device_info(fd, index, &info) &&
					      info.type == HMM_DEVICE_COHERENT;
				if (fd >= 0)
					NEXT(close)(fd);
			}
			attaching = false;
		} else {
			struct hmm_device_config cfg = {
				.size = sizeof(cfg),
				.type = index < 2 ? HMM_DEVICE_PRIVATE : HMM_DEVICE_COHERENT,
				.memory = env_memory(),
				.numa_node = -1,
				.compute_units = 1,
			};

			err = hmm_device_create(&cfg, &d->dev);
			d->coherent = index >= 2;
		}
		if (err)
			return err;
		d->pid = getpid();
	}
	if (!d->mirror) {
		err = hmm_mirror_create(d->dev, &d->mirror);
		if (err)
			return err;
	}
	d->opens++;
	return 0;
}

/* Context: shim.lock held. */
static void device_close(unsigned index)
{
	struct device *d = &shim.devices[index];

	if (d->pid != getpid() || !d->opens || --d->opens)
		return;
	while (d->busy)
		pthread_cond_wait(&shim.idle, &shim.lock);
	if (!d->opens && d->mirror) {
		hmm_mirror_destroy(d->mirror);
		d->mirror = NULL;
	}
}

/* An open of device index with flags: a memfd recorded as its file.  Return: fd, or -1 and errno. */
static int open_device(unsigned index, int flags)
{
	char name[32];
	int fd, err;

	snprintf(name, sizeof(name), "hmm_dmirror%u", index);
	fd = memfd_create(name, flags & O_CLOEXEC ? MFD_CLOEXEC : 0);
	if (fd < 0)
		return -1;
	pthread_mutex_lock(&shim.lock);
	err = -EMFILE;
	for (unsigned i = 0; i < MAX_FILES; i++) {
		struct file *f = &shim.files[i];

		if (f->fd < 0) {
			err = device_open(index);
			if (!err) {
				*f = (struct file){ fd, index, getpid(), false };
				__atomic_add_fetch(&shim.nfiles, 1, __ATOMIC_RELEASE);
			}
			break;
		}
	}
	pthread_mutex_unlock(&shim.lock);
	if (err) {
		NEXT(close)(fd);
		errno = -err;
		return -1;
	}
	return fd;
}

__attribute__((constructor)) static void shim_init(void)
{
	for (unsigned i = 0; i < MAX_FILES; i++)
		shim.files[i].fd = -1;
	find_next();
	__atomic_store_n(&ready, true, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------ safe copies */

/* Copy len bytes from the caller's address src.  Return: 0, -EFAULT. */
static int copy_in(void *dst, uint64_t src, size_t len)
{
	while (len) {
		struct iovec l = { dst, len }, r = { (void *)(uintptr_t)src, len };
		ssize_t n = process_vm_readv(getpid(), &l, 1, &r, 1, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EFAULT;
		dst = (char *)dst + n;
		src += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* Copy len bytes to the caller's address dst.  Return: 0, -EFAULT. */
static int copy_out(uint64_t dst, const void *src, size_t len)
{
	while (len) {
		struct iovec l = { (void *)src, len }, r = { (void *)(uintptr_t)dst, len };
		ssize_t n = process_vm_writev(getpid(), &l, 1, &r, 1, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EFAULT;
		src = (const char *)src + n;
		dst += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Buffers of our own (the driver's vmalloc'd bounce buffers), cut from one
 * region reserved at the first command (address space only, no memory
 * until used).  A buffer mapped during a command could land where the
 * program has just unmapped memory, and the device would then read the
 * buffer there instead of faulting, as no kernel buffer ever does.  A
 * command larger than the region maps its own (and has that risk).
 */
#define BOUNCE_REGION ((size_t)4 << 30)
#define BOUNCE_MAX 64 /* buffers in use at once */

static struct {
	char *base;                  /* the region, or NULL */
	size_t off[BOUNCE_MAX], len[BOUNCE_MAX]; /* in use, sorted by off */
	unsigned n;
} bounce; /* protected by shim.lock */

/* Context: shim.lock held.  Return: a free piece of len bytes, or NULL. */
static void *bounce_take(size_t len)
{
	size_t at = 0;
	unsigned i;

	if (!bounce.base) {
		void *r = NEXT(mmap)(NULL, BOUNCE_REGION, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (r == MAP_FAILED)
			return NULL;
		bounce.base = r;
	}
	if (bounce.n == BOUNCE_MAX)
		return NULL;
	for (i = 0; i < bounce.n && bounce.off[i] - at < len; i++)
		at = bounce.off[i] + bounce.len[i];
	if (BOUNCE_REGION - at < len)
		return NULL;
	memmove(&bounce.off[i + 1], &bounce.off[i], (bounce.n - i) * sizeof(bounce.off[0]));
	memmove(&bounce.len[i + 1], &bounce.len[i], (bounce.n - i) * sizeof(bounce.len[0]));
	bounce.off[i] = at;
	bounce.len[i] = len;
	bounce.n++;
	return bounce.base + at;
}

static void *bounce_alloc(size_t len)
{
	size_t ps = (size_t)page_size();
	void *p;

	len = (len + ps - 1) & ~(ps - 1);
	pthread_mutex_lock(&shim.lock);
	p = bounce_take(len);
	pthread_mutex_unlock(&shim.lock);
	if (p)
		return p;
	p = NEXT(mmap)(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* p must be what bounce_alloc(len) gave, with the same len. */
static void bounce_free(void *p, size_t len)
{
	size_t ps = (size_t)page_size();
	bool mine = false;

	if (!p)
		return;
	len = (len + ps - 1) & ~(ps - 1);
	pthread_mutex_lock(&shim.lock);
	for (unsigned i = 0; i < bounce.n && !mine; i++) {
		if (bounce.base + bounce.off[i] == p) {
			memmove(&bounce.off[i], &bounce.off[i + 1], (bounce.n - i - 1) * sizeof(bounce.off[0]));
			memmove(&bounce.len[i], &bounce.len[i + 1], (bounce.n - i - 1) * sizeof(bounce.len[0]));
			bounce.n--;
			mine = true;
		}
	}
	pthread_mutex_unlock(&shim.lock);
	/* Its memory goes back; the address space stays ours. */
	if (mine)
		madvise(p, len, MADV_DONTNEED);
	else
		munmap(p, len);
}

/* ------------------------------------------------------------- the commands */

struct command {
	struct hmm_dmirror_cmd cmd;
	struct device *d;
	struct file *f;
	uint64_t start, end;         /* cmd.addr, and npages further */
};

static uint64_t mirror_faults(struct hmm_mirror *m)
{
	struct hmm_mirror_stats st;

	return hmm_mirror_stats(m, &st) ? 0 : st.faults;
}

/* The device reads the command's pages through its mirror into ptr, as the
 * driver's READ and its read back after a migration or EXCLUSIVE do. */
static int read_to_ptr(struct command *c)
{
	size_t len = (size_t)(c->end - c->start);
	void *b = bounce_alloc(len);
	int err;

	if (!b)
		return -ENOMEM;
	err = hmm_mirror_read(c->d->mirror, c->start, b, len);
	if (!err)
		err = copy_out(c->cmd.ptr, b, len);
	if (!err)
		c->cmd.cpages = c->cmd.npages;
	bounce_free(b, len);
	return err;
}

static int cmd_read(struct command *c)
{
	uint64_t before = mirror_faults(c->d->mirror);
	int err = read_to_ptr(c);

	c->cmd.faults = mirror_faults(c->d->mirror) - before;
	return err;
}

static int cmd_write(struct command *c)
{
	size_t len = (size_t)(c->end - c->start);
	void *b = bounce_alloc(len);
	uint64_t before;
	int err;

	if (!b)
		return -ENOMEM;
	err = copy_in(b, c->cmd.ptr, len);
	if (!err) {
		before = mirror_faults(c->d->mirror);
		err = hmm_mirror_write(c->d->mirror, c->start, b, len);
		c->cmd.faults = mirror_faults(c->d->mirror) - before;
	}
	if (!err)
		c->cmd.cpages = c->cmd.npages;
	bounce_free(b, len);
	return err;
}

/*
 * The mapping at addr, from /proc/self/maps: its end, and whether it can be
 * read.  Return: 0; -EINVAL (nothing mapped there); -errno.
 */
static int mapping_at(uint64_t addr, uint64_t *end, bool *readable)
{
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[512];
	int err = -EINVAL;

	if (!maps)
		return -errno;
	while (fgets(line, sizeof(line), maps)) {
		unsigned long long s, e;
		char perms[5];

		if (sscanf(line, "%llx-%llx %4s", &s, &e, perms) != 3)
			continue;
		if (s <= addr && addr < e) {
			*end = e;
			*readable = perms[0] == 'r';
			err = 0;
			break;
		}
		/* A line may be longer than the buffer (a long path). */
		while (!strchr(line, '\n') && fgets(line, sizeof(line), maps))
			;
	}
	fclose(maps);
	return err;
}

/* The driver's rounds: [addr, *next) inside one readable mapping, at most
 * ROUND_PAGES pages.  Return: 0, -EINVAL (a hole or an unreadable mapping). */
static int next_round(const struct command *c, uint64_t addr, uint64_t *next_addr)
{
	uint64_t vend, limit = addr + ROUND_PAGES * page_size();
	bool readable;
	int err = mapping_at(addr, &vend, &readable);

	if (err)
		return err;
	if (!readable)
		return -EINVAL;
	*next_addr = c->end < limit ? c->end : limit;
	if (*next_addr > vend)
		*next_addr = vend;
	return 0;
}

static bool snap_invalidate(struct hmm_interval_notifier *sub, const struct hmm_notifier_range *r,
			    uint64_t cur_seq)
{
	(void)r;
	hmm_interval_set_seq(sub, cur_seq);
	return true;
}

static const struct hmm_interval_notifier_ops snap_ops = { .invalidate = snap_invalidate };

/* What the CPU's page table says of [start, end) for device d, no fault
 * asked, under a subscription of its own.  Return: 0, -errno. */
static int snapshot(struct device *d, uint64_t start, uint64_t end, uint64_t *pfns)
{
	struct hmm_interval_notifier *sub;
	struct hmm_range r = {
		.start = start,
		.end = end,
		.hmm_pfns = pfns,
		.dev_private_owner = d->dev,
	};
	int err = hmm_interval_notifier_insert(start, end - start, &snap_ops, NULL, &sub);

	if (err)
		return err;
	r.notifier = sub;
	do {
		r.notifier_seq = hmm_interval_read_begin(sub);
		err = hmm_range_fault(&r);
		if (!err && hmm_interval_read_retry(sub, r.notifier_seq))
			err = -EBUSY;
	} while (err == -EBUSY);
	hmm_interval_notifier_remove(sub);
	return err;
}

/* Is the page at va, as pfn reports it, in the memory of the device? */
static bool on_device(uint64_t pfn, uint64_t va)
{
	return (pfn & HMM_PFN_VALID) && (uint64_t)(uintptr_t)hmm_pfn_to_addr(pfn) != va;
}

/* The driver reads back what it migrated: every page must be on the device. */
static int read_back(struct command *c)
{
	size_t n = (size_t)c->cmd.npages;
	uint64_t *pfns = bounce_alloc(n * sizeof(*pfns));
	int err = pfns ? snapshot(c->d, c->start, c->end, pfns) : -ENOMEM;

	for (size_t i = 0; !err && i < n; i++)
		if (!on_device(pfns[i], c->start + i * page_size()))
			err = -ENOENT;
	bounce_free(pfns, n * sizeof(*pfns));
	return err ? err : read_to_ptr(c);
}

static const char zeros[1 << 16] __attribute__((aligned(1 << 12)));

#define PMD_PAGES 512 /* pages of a huge page, the driver's HPAGE_PMD_NR */

/*
 * FLAGS FAIL_ALLOC, used up at the first page a round tries to allocate
 * for.  The driver fails that page's allocation: a small page then stays
 * where it is (to the device) or fails the command with ENOMEM (to host
 * RAM), but a huge page is moved as small pages instead.  libhmm moves
 * small pages only; a page counts as one of a huge page when all of its
 * PMD-aligned run of PMD_PAGES pages lies in the round and is_huge() says
 * so of each of them.  Return: whether the driver's allocation would fail
 * for page i of the round (npages pages from start).
 */
static bool allocation_fails(struct command *c, const uint64_t *words, uint64_t start,
			     uint64_t npages, uint64_t i, bool (*is_huge)(uint64_t))
{
	uint64_t first = i - (start / page_size() + i) % PMD_PAGES;

	if (!__atomic_exchange_n(&c->f->fail_alloc, false, __ATOMIC_RELAXED))
		return false;
	if (!words || first > i || first + PMD_PAGES > npages)
		return true;
	for (uint64_t k = first; k < first + PMD_PAGES; k++)
		if (!is_huge(words[k]))
			return true;
	return false;
}

/* What the driver moves to the device as a huge page: a PMD mapping (a THP
 * or the huge zero page), or nothing mapped at all (an empty PMD). */
static bool cpu_huge_or_empty(uint64_t pfn)
{
	if (pfn & HMM_PFN_VALID)
		return hmm_pfn_to_map_order(pfn) == 9;
	return !(pfn & HMM_PFN_ERROR);
}

/* What the driver moves back as a huge page: a run wholly on this device. */
static bool selected_device_page(uint64_t src)
{
	return (src & HMM_MIGRATE_PFN_MIGRATE) && (src & HMM_MIGRATE_PFN_VALID);
}

/* One round to the device: the three phases, with this device's pages.
 * pfns (ROUND_PAGES words) holds the CPU's view for FAIL_ALLOC. */
static int to_device_round(struct command *c, uint64_t start, uint64_t end, uint64_t *src,
			   uint64_t *dst, uint64_t *pfns)
{
	uint64_t ps = page_size();
	struct hmm_migrate_vma a = {
		.start = start,
		.end = end,
		.src = src,
		.dst = dst,
		.pgmap_owner = c->d->dev,
		.flags = HMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	bool failing = __atomic_load_n(&c->f->fail_alloc, __ATOMIC_RELAXED);
	int err = failing ? snapshot(c->d, start, end, pfns) : 0;

	if (!err)
		err = hmm_migrate_vma_setup(&a);
	if (err)
		return err;
	for (uint64_t i = 0; i < a.npages; i++) {
		void *page;

		dst[i] = 0;
		if (!(src[i] & HMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (failing && allocation_fails(c, pfns, start, a.npages, i, cpu_huge_or_empty))
			continue; /* this page stays */
		if (hmm_device_page_alloc(c->d->dev, &page))
			continue;
		if (hmm_device_dma(c->d->dev, page,
				   src[i] & HMM_MIGRATE_PFN_VALID ? hmm_migrate_pfn_to_addr(src[i])
								  : (const void *)zeros,
				   ps)) {
			hmm_device_page_free(c->d->dev, page);
			continue;
		}
		dst[i] = hmm_migrate_pfn(page);
	}
	hmm_migrate_vma_pages(&a);
	hmm_migrate_vma_finalize(&a);
	return 0;
}

/* One round back to host RAM, into host (ROUND_PAGES pages); *moved grows. */
static int to_system_round(struct command *c, uint64_t start, uint64_t end, uint64_t *src,
			   uint64_t *dst, char *host, uint64_t *moved)
{
	uint64_t ps = page_size();
	struct hmm_migrate_vma a = {
		.start = start,
		.end = end,
		.src = src,
		.dst = dst,
		.pgmap_owner = c->d->dev,
		.flags = HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	int err = hmm_migrate_vma_setup(&a);

	if (err)
		return err;
	for (uint64_t i = 0; i < a.npages; i++)
		dst[i] = 0;
	for (uint64_t i = 0; !err && i < a.npages; i++) {
		if (!selected_device_page(src[i]))
			continue;
		if (allocation_fails(c, src, start, a.npages, i, selected_device_page)) {
			/* The driver's fault path: out of memory, nothing of the round moves. */
			memset(dst, 0, a.npages * sizeof(*dst));
			err = -ENOMEM;
			break;
		}
		if (hmm_device_dma(c->d->dev, host + i * ps, hmm_migrate_pfn_to_addr(src[i]), ps))
			continue;
		dst[i] = hmm_migrate_pfn(host + i * ps);
	}
	hmm_migrate_vma_pages(&a);
	for (uint64_t i = 0; !err && i < a.npages; i++)
		if (selected_device_page(src[i]))
			(*moved)++;
	hmm_migrate_vma_finalize(&a);
	return err;
}

static int cmd_migrate(struct command *c, bool to_device)
{
	size_t words = ROUND_PAGES * sizeof(uint64_t), hlen = ROUND_PAGES * page_size();
	uint64_t *src = bounce_alloc(3 * words), *dst = src ? src + ROUND_PAGES : NULL;
	uint64_t *pfns = src ? dst + ROUND_PAGES : NULL;
	char *host = !src || to_device ? NULL : bounce_alloc(hlen);
	uint64_t addr, next_addr, moved = 0;
	int err = !src || (!to_device && !host) ? -ENOMEM : 0;

	for (addr = c->start; !err && addr < c->end; addr = next_addr) {
		err = next_round(c, addr, &next_addr);
		if (!err)
			err = to_device ? to_device_round(c, addr, next_addr, src, dst, pfns)
					: to_system_round(c, addr, next_addr, src, dst, host, &moved);
	}
	bounce_free(host, hlen);
	bounce_free(src, 3 * words);
	if (err)
		return err;
	if (to_device)
		return read_back(c);
	c->cmd.cpages = moved;
	return 0;
}

/* One HMM_DMIRROR_PROT_* byte for the page at va that pfn describes. */
static uint8_t prot_byte(const struct device *d, uint64_t pfn, uint64_t va)
{
	uint8_t b;

	if (pfn & HMM_PFN_ERROR)
		return HMM_DMIRROR_PROT_ERROR;
	if (!(pfn & HMM_PFN_VALID))
		return HMM_DMIRROR_PROT_NONE;
	if (on_device(pfn, va))
		b = d->coherent ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL
				: HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	else if (pfn & HMM_PFN_ZERO)
		b = HMM_DMIRROR_PROT_ZERO;
	else
		b = HMM_DMIRROR_PROT_NONE;
	b |= pfn & HMM_PFN_WRITE ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
	if (hmm_pfn_to_map_order(pfn) == 9)
		b |= HMM_DMIRROR_PROT_PMD;
	else if (hmm_pfn_to_map_order(pfn) == 18)
		b |= HMM_DMIRROR_PROT_PUD;
	return b;
}

static int cmd_snapshot(struct command *c)
{
	size_t n = (size_t)c->cmd.npages;
	uint64_t *pfns = bounce_alloc(n * (sizeof(*pfns) + 1));
	uint8_t *bytes = pfns ? (uint8_t *)(pfns + n) : NULL;
	int err = pfns ? snapshot(c->d, c->start, c->end, pfns) : -ENOMEM;

	for (size_t i = 0; !err && i < n; i++)
		bytes[i] = prot_byte(c->d, pfns[i], c->start + i * page_size());
	if (!err)
		err = copy_out(c->cmd.ptr, bytes, n);
	if (!err)
		c->cmd.cpages = n;
	bounce_free(pfns, n * (sizeof(*pfns) + 1));
	return err;
}

static int cmd_exclusive(struct command *c)
{
	int err = hmm_make_device_exclusive(c->d->mirror, c->start, c->end);

	return err ? err : read_to_ptr(c);
}

/* The driver's check: -EPERM while a page is still mapped for atomics. */
static int cmd_check_exclusive(struct command *c)
{
	for (uint64_t va = c->start; va < c->end; va += page_size())
		if (!hmm_mirror_check_exclusive(c->d->mirror, va, va + page_size()))
			return -EPERM;
	return 0;
}

static int run(struct command *c, unsigned long request)
{
	switch (request) {
	case HMM_DMIRROR_READ:
		return cmd_read(c);
	case HMM_DMIRROR_WRITE:
		return cmd_write(c);
	case HMM_DMIRROR_MIGRATE_TO_DEV:
		return cmd_migrate(c, true);
	case HMM_DMIRROR_MIGRATE_TO_SYS:
		return cmd_migrate(c, false);
	case HMM_DMIRROR_SNAPSHOT:
		return cmd_snapshot(c);
	case HMM_DMIRROR_EXCLUSIVE:
		return cmd_exclusive(c);
	case HMM_DMIRROR_CHECK_EXCLUSIVE:
		return cmd_check_exclusive(c);
	case HMM_DMIRROR_RELEASE:
		return hmm_device_evict(c->d->dev);
	case HMM_DMIRROR_FLAGS:
		__atomic_store_n(&c->f->fail_alloc, !!(c->cmd.npages & HMM_DMIRROR_FLAG_FAIL_ALLOC),
				 __ATOMIC_RELAXED);
		return 0;
	default:
		return -EINVAL;
	}
}

/* An ioctl of a device file.  Return: 0, -errno. */
static int command(struct file *f, unsigned long request, uint64_t uarg)
{
	struct command c = { .f = f };
	uint64_t ps = page_size();
	int err;

	if (f->pid != getpid())
		return -ENODEV;
	err = copy_in(&c.cmd, uarg, sizeof(c.cmd));
	if (err)
		return err;
	if (c.cmd.addr & (ps - 1) || !c.cmd.npages || c.cmd.npages > (UINT64_MAX - c.cmd.addr) / ps)
		return -EINVAL;
	c.start = c.cmd.addr;
	c.end = c.start + c.cmd.npages * ps;
	if (c.end - c.start > (uint64_t)SIZE_MAX / 2)
		return -EINVAL;
	c.cmd.cpages = 0;
	c.cmd.faults = 0;

	pthread_mutex_lock(&shim.lock);
	c.d = &shim.devices[f->index];
	c.d->busy++;
	pthread_mutex_unlock(&shim.lock);
	err = run(&c, request);
	pthread_mutex_lock(&shim.lock);
	if (!--c.d->busy)
		pthread_cond_broadcast(&shim.idle);
	pthread_mutex_unlock(&shim.lock);
	if (!err)
		err = copy_out(uarg, &c.cmd, sizeof(c.cmd));
	return err;
}

/* The file of fd, if it is a device's.  The fast path: no device open at all. */
static struct file *device_file(int fd)
{
	struct file *f;

	if (!__atomic_load_n(&shim.nfiles, __ATOMIC_ACQUIRE) || attaching)
		return NULL;
	pthread_mutex_lock(&shim.lock);
	f = file_of(fd);
	pthread_mutex_unlock(&shim.lock);
	return f;
}

/* ------------------------------------------------------- the interposers */

static int open_at(int dirfd, const char *path, int flags, mode_t mode, bool at)
{
	int index = device_of_path(path);

	if (index >= 0)
		return open_device((unsigned)index, flags);
	if (!is_ready())
		return (int)syscall(SYS_openat, at ? dirfd : AT_FDCWD, path, flags, mode);
	return at ? NEXT(openat)(dirfd, path, flags, mode) : NEXT(open)(path, flags, mode);
}

static mode_t mode_arg(int flags, va_list ap)
{
	return flags & (O_CREAT | O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	return open_at(AT_FDCWD, path, flags, mode, false);
}


EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	return open_at(dirfd, path, flags, mode, true);
}


/* _FORTIFY_SOURCE's forms (no mode: O_CREAT is refused at compile time). */
int __open_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);

EXPORT int __open_2(const char *path, int flags)
{
	return open_at(AT_FDCWD, path, flags, 0, false);
}


EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	return open_at(dirfd, path, flags, 0, true);
}


EXPORT int close(int fd)
{
	if (__atomic_load_n(&shim.nfiles, __ATOMIC_ACQUIRE) && !attaching) {
		struct hmm_device *evict = NULL;
		struct file *f;

		pthread_mutex_lock(&shim.lock);
		f = file_of(fd);
		if (f && f->pid == getpid())
			evict = shim.devices[f->index].dev;
		pthread_mutex_unlock(&shim.lock);
		/* The driver's release: every page of the device back to host
		 * RAM, whoever migrated it (as RELEASE does).  Devices live as
		 * long as the process: the pointer stays good unlocked. */
		if (evict)
			hmm_device_evict(evict);
		pthread_mutex_lock(&shim.lock);
		f = file_of(fd);
		if (f) {
			if (f->pid == getpid())
				device_close(f->index);
			f->fd = -1;
			__atomic_sub_fetch(&shim.nfiles, 1, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&shim.lock);
	}
	return is_ready() ? NEXT(close)(fd) : (int)syscall(SYS_close, fd);
}

EXPORT int ioctl(int fd, unsigned long request, ...)
{
	struct file *f = device_file(fd);
	va_list ap;
	void *arg;
	int err;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!f)
		return is_ready() ? NEXT(ioctl)(fd, request, arg)
				  : (int)syscall(SYS_ioctl, fd, request, arg);
	err = command(f, request, (uint64_t)(uintptr_t)arg);
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}

/*
 * mmap of a device file: the driver maps fresh zeroed pages of its own
 * (vm_insert_page), present from the start.  Here they are the memfd's,
 * grown to cover the mapping, and populated.
 */
static void *map_device(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct stat st;
	void *p;

	if (off < 0 || (uint64_t)off > UINT64_MAX - len) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (fstat(fd, &st) || (st.st_size < off + (off_t)len && ftruncate(fd, off + (off_t)len)))
		return MAP_FAILED;
	p = NEXT(mmap)(addr, len, prot, flags, fd, off);
	if (p != MAP_FAILED && (prot & PROT_READ))
		madvise(p, len, MADV_POPULATE_READ);
	return p;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (!(flags & MAP_ANONYMOUS) && device_file(fd))
		return map_device(addr, len, prot, flags, fd, off);
	if (!is_ready())
		return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
	return NEXT(mmap)(addr, len, prot, flags, fd, off);
}


/* ------------------------------------- libhmm's interposers, passed on */

EXPORT int munmap(void *addr, size_t len)
{
	return is_ready() ? NEXT(munmap)(addr, len) : (int)syscall(SYS_munmap, addr, len);
}

EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *target = NULL;
	va_list ap;

	if (flags & MREMAP_FIXED) {
		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	if (!is_ready())
		return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, target);
	return NEXT(mremap)(old, old_len, new_len, flags, target);
}

EXPORT int mprotect(void *addr, size_t len, int prot)
{
	return is_ready() ? NEXT(mprotect)(addr, len, prot)
			  : (int)syscall(SYS_mprotect, addr, len, prot);
}

EXPORT int pkey_mprotect(void *addr, size_t len, int prot, int pkey)
{
	return is_ready() ? NEXT(pkey_mprotect)(addr, len, prot, pkey)
			  : (int)syscall(SYS_pkey_mprotect, addr, len, prot, pkey);
}

EXPORT int madvise(void *addr, size_t len, int advice)
{
	return is_ready() ? NEXT(madvise)(addr, len, advice)
			  : (int)syscall(SYS_madvise, addr, len, advice);
}

EXPORT int brk(void *addr)
{
	void *cur;

	if (is_ready())
		return NEXT(brk)(addr);
	cur = __sbrk(0);
	return cur == (void *)-1 || __sbrk((char *)addr - (char *)cur) == (void *)-1 ? -1 : 0;
}

EXPORT void *sbrk(intptr_t increment)
{
	return is_ready() ? NEXT(sbrk)(increment) : __sbrk(increment);
}

EXPORT int shmdt(const void *addr)
{
	return is_ready() ? NEXT(shmdt)(addr) : (int)syscall(SYS_shmdt, addr);
}

EXPORT pid_t fork(void)
{
	return is_ready() ? NEXT(fork)() : __fork();
}

/* The 64-bit names: the same functions (off_t is 64 bits here). */
EXPORT __typeof__(open) open64 __attribute__((alias("open")));
EXPORT __typeof__(openat) openat64 __attribute__((alias("openat")));
EXPORT __typeof__(__open_2) __open64_2 __attribute__((alias("__open_2")));
EXPORT __typeof__(__openat_2) __openat64_2 __attribute__((alias("__openat_2")));
EXPORT __typeof__(mmap) mmap64 __attribute__((alias("mmap")));
