/* SPDX-License-Identifier: MIT */
/*
 * hmm.h - libhmm, Heterogeneous Memory Management in user space.
 *
 * This is the whole public interface of libhmm.  Build with
 *     cc prog.c $(pkg-config --cflags --libs libhmm)
 *
 * Conventions, stated once for every function below:
 *  - Names are hmm_<object>_<verb>; objects are opaque handles.
 *  - Functions that can fail return 0 or a negative errno value and hand back
 *    objects through out-parameters.
 *  - Functions are thread-safe unless their description says otherwise.
 */
#ifndef HMM_H
#define HMM_H

#include <linux/ioctl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** HMM_VERSION_MAJOR, HMM_VERSION_MINOR, HMM_VERSION_PATCH - the version of this header. */
#define HMM_VERSION_MAJOR 0
#define HMM_VERSION_MINOR 1
#define HMM_VERSION_PATCH 0

/**
 * HMM_VERSION_NUMBER - the version of this header as one comparable number,
 * major * 10000 + minor * 100 + patch.
 */
#define HMM_VERSION_NUMBER \
	(HMM_VERSION_MAJOR * 10000 + HMM_VERSION_MINOR * 100 + HMM_VERSION_PATCH)

/**
 * hmm_version() - the version of the libhmm the program runs against.
 *
 * Compare with HMM_VERSION_NUMBER to detect a library older than the header
 * the program was built with.
 *
 * Context: any.
 * Return: major * 10000 + minor * 100 + patch.
 */
int hmm_version(void);

/**
 * hmm_version_string() - the version as text, "MAJOR.MINOR.PATCH".
 *
 * Context: any.
 * Return: a static string; never NULL.
 */
const char *hmm_version_string(void);

/*
 * The hmmfs ioctl interface.
 *
 * These ioctls act on an open file of an hmmfs mount (HMM_IOC_DEVICE_INFO
 * also on its directories).  On any other file the kernel answers ENOTTY.
 * The structures have fixed sizes and hold no pointers, as FUSE requires.
 */

/** HMM_LOC_HOST - a page location: host RAM.  Devices are 0, 1, 2 ... */
#define HMM_LOC_HOST (-1)
/** HMM_LOC_HOLE - a page location: a hole, which holds no memory anywhere. */
#define HMM_LOC_HOLE (-2)

/**
 * struct hmm_migrate - HMM_IOC_MIGRATE: move a range of a file's pages.
 * @offset: in; first byte, a multiple of the mount's page size.
 * @length: in; bytes, a multiple of the page size, or 0 for "to the end of
 *          the file".  The range may extend past the end of the file; only
 *          pages of the file are moved.
 * @dest: in; HMM_LOC_HOST or a device index.
 * @flags: in; must be 0.
 * @moved: out; pages moved.
 * @skipped: out; pages of the range already at @dest.  Holes are neither:
 *           they stay holes and use no memory.
 *
 * Pages are taken from the CPU first (every mapping of them will fault and
 * dirty mapped data is written back), copied by the DMA engines and then
 * resident at @dest.  A page the CPU touches while it is being taken may
 * stay where it was: it is then neither moved nor skipped.
 *
 * Errors: EINVAL (misaligned offset or length, flags not 0), ENODEV (no
 * such device), ENOSPC (the device is full and evict=none, or eviction found
 * no room; no page moved), EIO (the file was removed meanwhile).
 */
struct hmm_migrate {
	uint64_t offset;
	uint64_t length;
	int32_t dest;
	uint32_t flags;
	uint64_t moved;
	uint64_t skipped;
};

/** HMM_RESIDENCY_RANGES - ranges returned by one HMM_IOC_RESIDENCY call. */
#define HMM_RESIDENCY_RANGES 256

/** struct hmm_residency_range - @length bytes from @offset all live at @location. */
struct hmm_residency_range {
	uint64_t offset;
	uint64_t length;
	int32_t location; /* HMM_LOC_HOLE, HMM_LOC_HOST or a device index */
	uint32_t reserved;
};

/**
 * struct hmm_residency - HMM_IOC_RESIDENCY: where a file's pages live.
 * @offset: in; where to start, a multiple of the page size.
 * @size: out; the file's size.
 * @page_size: out; the mount's page size.
 * @count: out; ranges filled in @ranges, in order, adjacent, merged.
 * @next: out; where the next call should start, or @size when done.
 * @ranges: out; the layout of [@offset, @next).
 */
struct hmm_residency {
	uint64_t offset;
	uint64_t size;
	uint32_t page_size;
	uint32_t count;
	uint64_t next;
	struct hmm_residency_range ranges[HMM_RESIDENCY_RANGES];
};

/**
 * struct hmm_device_info - HMM_IOC_DEVICE_INFO: a device and its counters.
 * @index: in; the device.  out: everything else.
 * @ndevices: the number of devices of the mount.
 * @type: HMM_DEVICE_PRIVATE or HMM_DEVICE_COHERENT.
 * @numa_node: the node of its memory, or -1.
 * @page_size: the mount's page size.
 * @dma_engines: DMA engines.
 * @dma_bw: bytes per second per engine, 0 if unthrottled.
 * @dma_latency_ns: added to each transfer.
 * @capacity: bytes of memory.  @used: bytes in use: files' pages, and
 *        the anonymous memory attached processes reserved on it.
 * @pages_in, @bytes_in: migrated to the device.
 * @pages_out, @bytes_out: migrated away from it (evictions included).
 * @cpu_faults: CPU accesses served by moving a page back to host RAM.
 * @evictions: pages evicted to host RAM to make room.
 * @dma_busy_ns: time its DMA engines spent copying, summed over engines.
 */
struct hmm_device_info {
	uint32_t index;
	uint32_t ndevices;
	uint32_t type;
	int32_t numa_node;
	uint32_t page_size;
	uint32_t dma_engines;
	uint64_t dma_bw;
	uint64_t dma_latency_ns;
	uint64_t capacity;
	uint64_t used;
	uint64_t pages_in, bytes_in;
	uint64_t pages_out, bytes_out;
	uint64_t cpu_faults;
	uint64_t evictions;
	uint64_t dma_busy_ns;
};

#define HMM_DEVICE_PRIVATE 0
#define HMM_DEVICE_COHERENT 1

/** HMM_MAX_DEVICES - the most devices an hmmfs mount can have. */
#define HMM_MAX_DEVICES 64

/**
 * struct hmm_file_stat - HMM_IOC_FILE_STAT: one file's residency and counters.
 * @size: the file's size.  @page_size: the mount's page size.
 * @ndevices: the devices of the mount (entries of @device_bytes in use).
 * @host_bytes: bytes of pages in host RAM.
 * @device_bytes: bytes of pages on each device.
 * @pages_to_device, @bytes_to_device: pages moved onto a device.
 * @pages_to_host, @bytes_to_host: pages moved back to host RAM (CPU faults
 *     and evictions included).
 * @cpu_faults: pages brought back to host RAM by a CPU access.
 * @evictions: pages evicted to host RAM to make room on a device.
 *
 * Counters start at zero when the file is created.
 */
struct hmm_file_stat {
	uint64_t size;
	uint32_t page_size;
	uint32_t ndevices;
	uint64_t host_bytes;
	uint64_t device_bytes[HMM_MAX_DEVICES];
	uint64_t pages_to_device, bytes_to_device;
	uint64_t pages_to_host, bytes_to_host;
	uint64_t cpu_faults;
	uint64_t evictions;
};

#define HMM_IOC_MAGIC 'h'
#define HMM_IOC_MIGRATE _IOWR(HMM_IOC_MAGIC, 0x40, struct hmm_migrate)
#define HMM_IOC_RESIDENCY _IOWR(HMM_IOC_MAGIC, 0x41, struct hmm_residency)
#define HMM_IOC_DEVICE_INFO _IOWR(HMM_IOC_MAGIC, 0x42, struct hmm_device_info)
#define HMM_IOC_FILE_STAT _IOR(HMM_IOC_MAGIC, 0x43, struct hmm_file_stat)

/*
 * Attaching to the devices of a mount.  A process that wants to use a
 * device of the mount together with the daemon (its memory, its files'
 * pages there) opens a session: HMM_IOC_ATTACH on any file or directory of
 * the mount gives the name of the daemon's control socket and a one-time
 * token; the process connects and presents the token.  The daemon checks
 * the caller at both steps (the mount's attach= option, the peer's uid and
 * process).  Within a session, HMM_IOC_GRANT on an open file gives a token
 * for that file's memory on a device, which the session redeems for a
 * descriptor of it: read-only unless the file is open for writing.
 * HMM_IOC_DEVICE_PAGES says where the file's pages lie in that memory.
 * libhmm's hmm_device_attach() does all of this; hmmfs(8), ATTACHING.
 */

/** HMM_TOKEN_WORDS - 64-bit words of a token. */
#define HMM_TOKEN_WORDS 2
/** HMM_SOCKET_NAME_MAX - bytes of a control socket's name, its NUL included. */
#define HMM_SOCKET_NAME_MAX 64
/**
 * HMM_ATTACH_OBSERVE - the index, for HMM_IOC_ATTACH and HMM_IOC_GRANT, of
 * no device: a session that only hears of the daemon's changes to the
 * files it was granted (their invalidations), with no device memory; it
 * works on a mount without devices too, and for anyone who can open a file
 * of the mount, whatever its attach= option says.
 */
#define HMM_ATTACH_OBSERVE UINT32_MAX

/**
 * struct hmm_attach - HMM_IOC_ATTACH: ask to attach to a device.
 * @index: in; the device, or HMM_ATTACH_OBSERVE.
 * @flags: in; must be 0.
 * @token: out; to present on the socket, once, within 10 seconds, by the
 *         same process (the daemon checks its uid and process id).
 * @socket: out; the socket's name in the abstract namespace (unix(7)),
 *          without its leading NUL byte, NUL-terminated.
 *
 * Errors: ENODEV (no such device), EINVAL (flags), EACCES (the mount's
 * attach= option refuses the caller), EAGAIN (too many tokens pending).
 */
struct hmm_attach {
	uint32_t index;
	uint32_t flags;
	uint64_t token[HMM_TOKEN_WORDS];
	char socket[HMM_SOCKET_NAME_MAX];
};

/**
 * struct hmm_grant - HMM_IOC_GRANT: ask for an open file's memory on a device.
 * @index: in; the device, or HMM_ATTACH_OBSERVE: only hear of the file's
 *         changes (the session then gets no descriptor).
 * @flags: in; must be 0.
 * @writable: out; 1 if the descriptor will be writable (the file is open
 *            for writing), else 0.
 * @reserved: out; 0.
 * @token: out; to redeem in the caller's session (same rules as
 *         struct hmm_attach's).
 *
 * Errors: ENODEV, EINVAL, EACCES (as for HMM_IOC_ATTACH), ENOTTY (not a
 * regular file), ENOMEM/EMFILE (the daemon could not make the memory).
 */
struct hmm_grant {
	uint32_t index;
	uint32_t flags;
	uint32_t writable;
	uint32_t reserved;
	uint64_t token[HMM_TOKEN_WORDS];
};

/** HMM_DEVICE_PAGES_MAX - pages one HMM_IOC_DEVICE_PAGES call answers. */
#define HMM_DEVICE_PAGES_MAX 512
/** HMM_DEVICE_PAGE_ABSENT - in struct hmm_device_pages: not on that device. */
#define HMM_DEVICE_PAGE_ABSENT UINT64_MAX

/**
 * struct hmm_device_pages - HMM_IOC_DEVICE_PAGES: where a range of an open
 * file's pages lie in its memory on a device (struct hmm_grant).
 * @offset: in; first byte, a multiple of the page size.
 * @index: in; the device.
 * @count: in; pages asked, 1 to HMM_DEVICE_PAGES_MAX; out: pages answered
 *         (fewer at the end of the file).
 * @where: out; per page, its byte offset in that memory, or
 *         HMM_DEVICE_PAGE_ABSENT: a hole, elsewhere, or being migrated.
 *
 * Errors: EINVAL (misaligned offset, count out of range), ENODEV, ENOTTY.
 */
struct hmm_device_pages {
	uint64_t offset;
	uint32_t index;
	uint32_t count;
	uint64_t where[HMM_DEVICE_PAGES_MAX];
};

#define HMM_IOC_ATTACH _IOWR(HMM_IOC_MAGIC, 0x44, struct hmm_attach)
#define HMM_IOC_GRANT _IOWR(HMM_IOC_MAGIC, 0x45, struct hmm_grant)
#define HMM_IOC_DEVICE_PAGES _IOWR(HMM_IOC_MAGIC, 0x46, struct hmm_device_pages)

/**
 * hmm_file_migrate() - move a range of an hmmfs file's pages (HMM_IOC_MIGRATE).
 * @fd: an open file of an hmmfs mount (any access mode).
 * @offset: first byte, a multiple of the mount's page size.
 * @length: bytes, a multiple of the page size, or 0 for the rest of the file.
 * @dest: HMM_LOC_HOST or a device index.
 * @result: if not NULL, receives the request with its moved and skipped counts.
 *
 * Context: blocks until the pages have moved.
 * Return: 0; -EINVAL (misaligned range, @dest below HMM_LOC_HOST), -ENODEV
 * (no such device), -ENOSPC (no room at @dest; nothing moved), -ENOTTY (not
 * an hmmfs file), -EBADF, or another negative errno from ioctl(2).
 */
int hmm_file_migrate(int fd, uint64_t offset, uint64_t length, int dest,
		     struct hmm_migrate *result);

/**
 * hmm_file_residency() - where the pages of an hmmfs file live, from @offset
 * on, in up to HMM_RESIDENCY_RANGES ranges (HMM_IOC_RESIDENCY); call again
 * from @r->next until it equals @r->size.
 * @r: receives the answer; @offset must be a multiple of the page size.
 *
 * Context: any.
 * Return: 0, -EINVAL, -ENOTTY (not an hmmfs file), or another negative errno.
 */
int hmm_file_residency(int fd, uint64_t offset, struct hmm_residency *r);

/**
 * hmm_device_info() - a device of the hmmfs mount that @fd is on, with its
 * counters (HMM_IOC_DEVICE_INFO).  @fd may be a file or a directory.
 *
 * Context: any.
 * Return: 0, -ENODEV (no device @index; info->ndevices is not set), -ENOTTY
 * (not on hmmfs), or another negative errno.
 */
int hmm_device_info(int fd, unsigned int index, struct hmm_device_info *info);

/**
 * hmm_file_stat() - an hmmfs file's residency and counters (HMM_IOC_FILE_STAT).
 *
 * Context: any.
 * Return: 0, -ENOTTY (not a regular file of hmmfs), or another negative errno.
 */
int hmm_file_stat(int fd, struct hmm_file_stat *st);

/*
 * Interval notifiers: being told before the process's address space changes.
 *
 * A mirror (a device's view of this process) subscribes to the ranges it
 * mirrors.  Before a change to the CPU's mappings of a range becomes visible
 * (unmapping, a protection change, pages dropped, a migration), libhmm calls
 * the invalidate callback of every subscription that overlaps it, and the
 * change waits until every callback has returned.  Together with the
 * sequence numbers this is the kernel's mmu_interval_notifier protocol:
 *
 *	again:
 *		seq = hmm_interval_read_begin(sub);
 *		range.notifier_seq = seq;
 *		ret = hmm_range_fault(&range);        (no driver lock held)
 *		if (ret == -EBUSY) goto again;
 *		lock(driver);
 *		if (hmm_interval_read_retry(sub, seq)) { unlock(driver); goto again; }
 *		... install the device mappings from range.hmm_pfns ...
 *		unlock(driver);
 *
 * and the invalidate callback takes the same driver lock, calls
 * hmm_interval_set_seq(sub, cur_seq), drops the device mappings of the range
 * and returns true.
 */

/**
 * enum hmm_notify_event - why a range is invalidated.  The values are those
 * of the kernel's enum mmu_notifier_event.
 * @HMM_NOTIFY_UNMAP: the range is unmapped (munmap, mremap away from it,
 *	a MAP_FIXED mapping over it, brk shrinking, shmdt).
 * @HMM_NOTIFY_CLEAR: pages are dropped but the mapping stays (madvise
 *	DONTNEED, FREE, REMOVE; truncation of a mapped file).
 * @HMM_NOTIFY_PROTECTION_VMA: the mapping's protection changes (mprotect).
 * @HMM_NOTIFY_PROTECTION_PAGE: pages become read-only (fork's copy-on-write).
 * @HMM_NOTIFY_SOFT_DIRTY: never sent; kept for the kernel's numbering.
 * @HMM_NOTIFY_RELEASE: the address space goes away (exit).
 * @HMM_NOTIFY_MIGRATE: pages migrate; the range's owner is the migrating
 *	device's owner, so that device can skip its own migration.
 * @HMM_NOTIFY_EXCLUSIVE: a device takes pages for exclusive access; the
 *	owner is that device's owner.
 */
enum hmm_notify_event {
	HMM_NOTIFY_UNMAP = 0,
	HMM_NOTIFY_CLEAR,
	HMM_NOTIFY_PROTECTION_VMA,
	HMM_NOTIFY_PROTECTION_PAGE,
	HMM_NOTIFY_SOFT_DIRTY,
	HMM_NOTIFY_RELEASE,
	HMM_NOTIFY_MIGRATE,
	HMM_NOTIFY_EXCLUSIVE,
};

/**
 * struct hmm_notifier_range - what an invalidate callback is told.
 * @start: first byte of the range, page aligned.
 * @end: one past its last byte, page aligned.
 * @event: why (enum hmm_notify_event).
 * @owner: for HMM_NOTIFY_MIGRATE and HMM_NOTIFY_EXCLUSIVE, the owner given
 *	by whoever causes it; NULL otherwise.
 */
struct hmm_notifier_range {
	uint64_t start;
	uint64_t end;
	enum hmm_notify_event event;
	const void *owner;
};

/** struct hmm_interval_notifier - a subscription (opaque). */
struct hmm_interval_notifier;

/**
 * struct hmm_interval_notifier_ops - a subscription's callbacks.
 * @invalidate: called before the change, with cur_seq to pass to
 *	hmm_interval_set_seq() under the driver lock.  It may sleep (take
 *	locks, wait for the device) and must not return before the device has
 *	stopped using the range.  It must not insert or remove notifiers nor
 *	change the address space itself.  Return true.
 */
struct hmm_interval_notifier_ops {
	bool (*invalidate)(struct hmm_interval_notifier *sub,
			    const struct hmm_notifier_range *range, uint64_t cur_seq);
};

/**
 * hmm_interval_notifier_insert() - subscribe to [start, start + length).
 * @start: first byte; need not be aligned.
 * @length: bytes, at least 1; the range must not wrap.
 * @ops: the callbacks; must stay valid until the subscription is removed.
 * @priv: handed back by hmm_interval_notifier_priv().
 * @out: the new subscription.
 *
 * Context: must not be called from an invalidate callback.
 * Return: 0, -EINVAL (length 0, wrap, NULL ops or out), -ENOMEM.
 */
int hmm_interval_notifier_insert(uint64_t start, uint64_t length,
				 const struct hmm_interval_notifier_ops *ops, void *priv,
				 struct hmm_interval_notifier **out);

/**
 * hmm_interval_notifier_remove() - end a subscription and free it.
 *
 * When it returns, the callback is not running for sub and never will be.
 * Context: must not be called from an invalidate callback.
 */
void hmm_interval_notifier_remove(struct hmm_interval_notifier *sub);

/** hmm_interval_notifier_priv() - the priv given at insertion. */
void *hmm_interval_notifier_priv(const struct hmm_interval_notifier *sub);

/**
 * hmm_interval_read_begin() - start reading the CPU's mappings of sub's range.
 *
 * If an invalidation of sub's range is in progress, waits for it to end.
 * Context: may sleep; not under the driver lock that the callback takes.
 * Return: the sequence number to pass to hmm_interval_read_retry().
 */
uint64_t hmm_interval_read_begin(struct hmm_interval_notifier *sub);

/**
 * hmm_interval_read_retry() - was sub invalidated since read_begin returned seq?
 *
 * Context: under the driver lock that the invalidate callback takes, so that
 * a false answer stays true until the lock is dropped.
 * Return: true if what was read must be thrown away and read again.
 */
bool hmm_interval_read_retry(struct hmm_interval_notifier *sub, uint64_t seq);

/**
 * hmm_interval_check_retry() - the same test without the lock, as a hint
 * that a long read can stop early.
 */
bool hmm_interval_check_retry(struct hmm_interval_notifier *sub, uint64_t seq);

/**
 * hmm_interval_set_seq() - record, from the invalidate callback, the cur_seq
 * it was given, under the driver lock.
 */
void hmm_interval_set_seq(struct hmm_interval_notifier *sub, uint64_t cur_seq);

/*
 * Range fault: a snapshot of the CPU's page table over a range, optionally
 * faulting pages in first (the kernel's hmm_range_fault).
 *
 * Each page of the range has one 64-bit word in hmm_pfns.  On input it
 * carries requests (HMM_PFN_REQ_FAULT: the page must be present; with
 * HMM_PFN_REQ_WRITE: present and writable), combined with the range's
 * defaults as (word & pfn_flags_mask) | default_flags.  On output it
 * carries HMM_PFN_VALID, HMM_PFN_WRITE, HMM_PFN_ERROR, HMM_PFN_ZERO and the page order,
 * and in its low bits the page's frame number in this process: the address
 * of the page's memory divided by the page size, which hmm_pfn_to_addr()
 * turns back into a pointer.  A page of system memory is at its own CPU
 * address; a page in the memory of the device whose owner is
 * dev_private_owner is at the address of that device memory, and a page of
 * any other device is reported as absent (and brought back to host RAM if
 * a fault is requested).
 */

#define HMM_PFN_VALID (1ULL << 63)
#define HMM_PFN_WRITE (1ULL << 62)
#define HMM_PFN_ERROR (1ULL << 61)
#define HMM_PFN_ORDER_SHIFT 56
#define HMM_PFN_ORDER_MASK (0x1fULL << HMM_PFN_ORDER_SHIFT)
/* Output: the shared zero page (the kernel's drivers ask is_zero_pfn()). */
#define HMM_PFN_ZERO (1ULL << 55)
#define HMM_PFN_FLAGS (HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_ERROR | HMM_PFN_ORDER_MASK | \
		       HMM_PFN_ZERO)
#define HMM_PFN_REQ_FAULT HMM_PFN_VALID
#define HMM_PFN_REQ_WRITE HMM_PFN_WRITE

/**
 * struct hmm_range - the arguments of hmm_range_fault().
 * @notifier: the subscription covering the range.
 * @notifier_seq: what hmm_interval_read_begin() returned.
 * @start: first byte, page aligned.
 * @end: one past the last byte, page aligned, greater than start.
 * @hmm_pfns: (end - start) / page size words, in and out.
 * @default_flags: requests for every page.
 * @pfn_flags_mask: which bits of each hmm_pfns word are requests.
 * @dev_private_owner: the device memory to report as present.
 */
struct hmm_range {
	struct hmm_interval_notifier *notifier;
	uint64_t notifier_seq;
	uint64_t start;
	uint64_t end;
	uint64_t *hmm_pfns;
	uint64_t default_flags;
	uint64_t pfn_flags_mask;
	const void *dev_private_owner;
};

/**
 * hmm_range_fault() - fill range->hmm_pfns from the CPU's page table.
 *
 * Pages that are not mapped or not readable report HMM_PFN_ERROR when no
 * fault is requested for them; pages mapped but not present report 0.
 * Context: no driver lock held (it may fault pages in and sleep).
 * Return: 0; -EBUSY (the range was invalidated meanwhile: read_begin
 * again); -EFAULT (a fault was requested on a page that is not mapped or
 * not accessible); -EPERM (a write was requested on a read-only mapping);
 * -EINVAL (misaligned or empty range, NULL notifier or hmm_pfns, or a range
 * outside the notifier's); -ENOMEM.
 */
int hmm_range_fault(struct hmm_range *range);

/** hmm_pfn_to_addr() - the address of the memory a VALID hmm_pfns word names. */
static inline void *hmm_pfn_to_addr(uint64_t pfn)
{
	return (void *)(uintptr_t)((pfn & ~HMM_PFN_FLAGS) << 12);
}

/** hmm_pfn_to_map_order() - the order of the CPU mapping (0: one page). */
static inline unsigned int hmm_pfn_to_map_order(uint64_t pfn)
{
	return (unsigned int)((pfn & HMM_PFN_ORDER_MASK) >> HMM_PFN_ORDER_SHIFT);
}

/*
 * Embedded devices and mirrors.
 *
 * An embedded device lives inside the process: its memory, its DMA engines
 * and its MMU are libhmm's, and no daemon is involved.  A mirror is the
 * device's view of the process's address space (one per device): its page
 * table, filled by device faults and emptied by invalidations, through
 * which the device reads and writes the process's memory at the addresses
 * the CPU uses.
 */

/** struct hmm_device - a device (opaque). */
struct hmm_device;

/**
 * struct hmm_device_config - what hmm_device_create() makes.
 * @size: sizeof(struct hmm_device_config), so that later versions can grow it.
 * @type: HMM_DEVICE_PRIVATE or HMM_DEVICE_COHERENT.
 * @memory: bytes of device memory, at least one page.
 * @numa_node: the NUMA node of the device memory and engine threads, or -1.
 * @dma_engines: DMA engines, 1 to HMM_MAX_DEVICES (0 means 1).
 * @dma_bw: bytes per second per engine; 0 for unthrottled.
 * @dma_latency_ns: added to every transfer.
 * @compute_units: threads that run device kernels, 1 to
 *	HMM_MAX_COMPUTE_UNITS (0: one per online CPU).
 */
struct hmm_device_config {
	uint32_t size;
	uint32_t type;
	uint64_t memory;
	int32_t numa_node;
	uint32_t dma_engines;
	uint64_t dma_bw;
	uint64_t dma_latency_ns;
	uint32_t compute_units;
	uint32_t reserved;
};

/** HMM_MAX_COMPUTE_UNITS - the most compute units a device can have. */
#define HMM_MAX_COMPUTE_UNITS 256

/**
 * hmm_device_create() - make an embedded device.
 *
 * Context: any.
 * Return: 0; -EINVAL (a NULL argument, an unknown size or type, memory
 * smaller than a page, too many engines); -ENODEV (no such NUMA node);
 * -ENOMEM; -EAGAIN (no thread for an engine).
 */
int hmm_device_create(const struct hmm_device_config *cfg, struct hmm_device **out);

/**
 * hmm_device_destroy() - stop the device's engines and free its memory.
 *
 * Anonymous memory on the device comes back to host RAM first, and CPU
 * faults bringing pages back meanwhile are waited for.
 * Context: its mirror must have been destroyed, and no migration to the
 * device (hmm_migrate_vma_setup() with it as owner) may be under way.  In
 * a fork() child, a device it inherited (every other call on it, and on
 * its mirror, gives -ENODEV) is only forgotten: its threads are the
 * parent's.
 * Return: 0, -EBUSY (it still has a mirror: nothing was done).
 */
int hmm_device_destroy(struct hmm_device *dev);

/**
 * hmm_device_attach() - a device of a running hmmfs mount, shared with the
 * daemon and its files (hmmfs(8), "Attaching to the devices").
 * @path: a file or directory of the mount; it stays open, so the mount is
 *        busy, until the device is destroyed.
 * @index: the mount's device.
 * @out: the device; hmm_device_destroy() detaches it.
 *
 * A mirror of the device sees a page of a file of the mount that this
 * process maps shared, and that lies on this device, as present at the
 * page's place in the device's memory, without bringing it back: a read,
 * a write (if the mapping and the file's open allow it), an atomic or a
 * kernel uses the device memory itself, which the daemon granted (the file
 * is opened again through the mapping's path, with the mapping's access,
 * so the kernel checks that this process may).  When the daemon moves or
 * frees such a page, the mirror is invalidated first (HMM_NOTIFY_MIGRATE
 * with no owner: the change is the daemon's, never this driver's own).
 * Any other device, and the CPU, bring the page back first, as with the
 * kernel's device-private pages.  Compute units: one per CPU.
 * This process's private anonymous memory migrates to the device as to an
 * embedded one (hmm_migrate_vma_setup(), hmm_device_page_alloc(),
 * hmm_device_dma()): the pages stay in this process, moved by a DMA engine
 * with the mount's settings, but the daemon counts them as used on the
 * device (reserved in 2 MiB steps) and refuses them, -ENOSPC, when it is
 * full; files' pages are not evicted for them.  hmm_device_stats() reports
 * the daemon's capacity and use of the device, and its counters plus this
 * process's anonymous pages moved.
 *
 * Context: any.
 * Return: 0; -EINVAL (NULL, or @index is HMM_ATTACH_OBSERVE); -ENOTTY (not
 * on hmmfs); -ENODEV (no such device); -EACCES (the mount's attach= option refuses this user); -EPROTO
 * (the mount's page size is below the system's, or the daemon answered
 * wrongly); -ENOMEM; or another -errno from opening @path or the socket.
 */
int hmm_device_attach(const char *path, unsigned int index, struct hmm_device **out);

/** struct hmm_mirror - a device's view of this process (opaque). */
struct hmm_mirror;

/*
 * Device page tables.  A mirror translates through a page table in a format
 * of its own, behind an ops table: the reference format (hmm_pt_radix()),
 * a four-level radix tree of 512-entry tables with 4 KiB leaves and 2 MiB
 * entries, or one a driver prototype plugs in with hmm_mirror_create_pt().
 *
 * An entry is 64 bits: bits 63..12 are the address, in this process, of the
 * memory behind the page (host RAM or device memory), 4 KiB aligned (2 MiB
 * for a large entry); bits 11..0 are HMM_PTE_* flags.  0 is "not present";
 * every present entry has HMM_PTE_VALID.  The compute units' TLBs cache
 * entries as the format returns them, so every format keeps this layout.
 *
 * Every range is [start, end) in bytes, below 2^47.  No op takes a lock:
 * the mirror calls them under its own lock, one at a time.
 */
#define HMM_PTE_VALID (1ULL << 0)
#define HMM_PTE_WRITE (1ULL << 1)     /* the device may write; else read-only */
#define HMM_PTE_DEVICE (1ULL << 2)    /* device memory, not system memory */
#define HMM_PTE_EXCLUSIVE (1ULL << 3) /* held by the device for atomics */
#define HMM_PTE_LARGE (1ULL << 4)     /* set by the format on order-9 entries */

/**
 * struct hmm_pt_ops - a page-table format.
 * @size: sizeof(struct hmm_pt_ops).
 * @name: the format's name, for messages.
 * @create: make an empty table in *pt.  Return: 0, -ENOMEM.
 * @destroy: free the table and everything below it.
 * @map: install pte for [va, va + (4096 << order)); order is 0 (4 KiB) or
 *	9 (2 MiB), va and the pte's address aligned to the size, the pte
 *	VALID.  Set HMM_PTE_LARGE on order-9 entries, clear it on others.
 *	Replace what was there: a large entry over small ones drops them; a
 *	small entry inside a large one drops the large one first.  Return: 0;
 *	-EINVAL (bad order or alignment, or a format without large entries
 *	asked for one); -ENOMEM (nothing changed).
 * @unmap: clear every entry overlapping [start, end); a large entry partly
 *	inside goes whole.  Never fails, never allocates.  Return: the 4 KiB
 *	pages that were present (a large entry counts 512).
 * @protect: clear the flags in clear on every entry overlapping [start,
 *	end); a large entry partly inside is dropped instead.  Never allocates.
 * @lookup: the entry translating va (0 if none), and its order in *order
 *	when order is not NULL.
 * @walk: call fn for every present entry overlapping [start, end), in
 *	address order, with the entry's own first address; fn must not change
 *	the table.  Return: 0, or the first non-zero value fn returned.
 * @footprint: bytes the table itself uses.
 */
struct hmm_pt_ops {
	uint32_t size;
	const char *name;
	int (*create)(void **pt);
	void (*destroy)(void *pt);
	int (*map)(void *pt, uint64_t va, uint64_t pte, unsigned int order);
	uint64_t (*unmap)(void *pt, uint64_t start, uint64_t end);
	void (*protect)(void *pt, uint64_t start, uint64_t end, uint64_t clear);
	uint64_t (*lookup)(void *pt, uint64_t va, unsigned int *order);
	int (*walk)(void *pt, uint64_t start, uint64_t end,
		    int (*fn)(void *arg, uint64_t va, uint64_t pte, unsigned int order),
		    void *arg);
	size_t (*footprint)(void *pt);
};

/** hmm_pt_radix() - the reference format, for mirrors and for wrapping. */
const struct hmm_pt_ops *hmm_pt_radix(void);

/**
 * hmm_mirror_create_pt() - hmm_mirror_create() with the page-table format
 * ops (NULL: the reference format).  The ops must outlive the mirror.
 * Return: as hmm_mirror_create(); -EINVAL also for ops of another size or
 * with a NULL function.
 */
int hmm_mirror_create_pt(struct hmm_device *dev, const struct hmm_pt_ops *ops,
			 struct hmm_mirror **out);

/**
 * hmm_mirror_create() - let the device use this process's memory.
 *
 * Context: any.
 * Return: 0; -EEXIST (the device already mirrors this process); -EINVAL;
 * -ENOMEM.
 */
int hmm_mirror_create(struct hmm_device *dev, struct hmm_mirror **out);

/** hmm_mirror_destroy() - drop every device mapping and free the mirror. */
void hmm_mirror_destroy(struct hmm_mirror *mirror);

/**
 * hmm_mirror_read() - the device reads len bytes at the process address va.
 *
 * The device translates through its page table; a page it has no entry for
 * is a device fault, served with hmm_range_fault() under the sequence
 * protocol (one round for the rest of the access), and the access resumes.
 * Context: may sleep.
 * Return: 0; -EFAULT (a page has no mapping or an unreadable one: the bytes
 * before it were read); -EINVAL (NULL buf with len, or va + len wraps);
 * -ENOMEM.
 */
int hmm_mirror_read(struct hmm_mirror *mirror, uint64_t va, void *buf, size_t len);

/**
 * hmm_mirror_write() - the device writes len bytes at the process address va.
 *
 * As hmm_mirror_read(), with write access: a copy-on-write page is copied
 * first, as a CPU write would.
 * Return: 0; -EFAULT; -EPERM (a page's mapping is read-only: the bytes
 * before it were written); -EINVAL; -ENOMEM.
 */
int hmm_mirror_write(struct hmm_mirror *mirror, uint64_t va, const void *buf, size_t len);

/**
 * struct hmm_mirror_stats - a mirror's counters since its creation.
 * @faults: device faults (one per access that found pages missing, as the
 *	kernel's test driver counts them).
 * @pages_faulted: pages mapped by servicing them.
 * @invalidations: invalidate callbacks that reached the mirror.
 * @pages_invalidated: device mappings they dropped (4 KiB pages).
 * @mapped_pages: device mappings now (4 KiB pages).
 * @launches: kernels launched (hmm_launch()).
 * @tlb_hits: kernel accesses translated by a compute unit's TLB.
 * @tlb_misses: kernel accesses that went to the page table (or faulted).
 * @fault_batches: batches the fault buffer serviced; faults of the same
 *	pages queued at the same time (by several compute units), and all
 *	faults queued while every CPU is servicing, are serviced together,
 *	their pages merged into ranges.
 */
struct hmm_mirror_stats {
	uint64_t faults;
	uint64_t pages_faulted;
	uint64_t invalidations;
	uint64_t pages_invalidated;
	uint64_t mapped_pages;
	uint64_t launches;
	uint64_t tlb_hits;
	uint64_t tlb_misses;
	uint64_t fault_batches;
};

/** hmm_mirror_stats() - read the counters.  Return: 0, -EINVAL. */
int hmm_mirror_stats(struct hmm_mirror *mirror, struct hmm_mirror_stats *stats);

/* Where a device fault puts system memory (hmm_mirror_advise()). */
#define HMM_POLICY_MAP 0     /* map the pages where they are (default) */
#define HMM_POLICY_MIGRATE 1 /* migrate anonymous pages to the device first */

/**
 * hmm_mirror_advise() - choose what the device's faults do with the pages
 * of [addr, addr + len) (page aligned), as cudaMemAdvise sets a preferred
 * location: map them in place (HMM_POLICY_MAP, the default everywhere), or
 * first migrate the private anonymous pages of the fault's window into the
 * device's memory, at least to the end of its 2 MiB block but never past
 * the advised range (HMM_POLICY_MIGRATE, as hmm_migrate_to_device() does;
 * what cannot move is mapped in place).  Advice replaces earlier advice
 * over the same pages, and applies to the faults that follow: pages the
 * device has already mapped stay where they are.  Pages move whole: a
 * page shared with other allocations moves with them, and each comes back
 * when the CPU touches it.
 * Return: 0; -EINVAL (misaligned or empty range, unknown policy); -ENOMEM.
 */
int hmm_mirror_advise(struct hmm_mirror *mirror, const void *addr, size_t len,
		      unsigned int policy);

/**
 * hmm_make_device_exclusive() - give the mirror's device exclusive access
 * to the pages of [start, end), for atomics (the kernel's
 * make_device_exclusive, as its test driver uses it).
 *
 * The pages must be private anonymous writable memory.  They are taken
 * from the CPU: any CPU access to one (or a fork(), or another device's
 * fault) faults, tells the devices with HMM_NOTIFY_EXCLUSIVE and no owner,
 * and gives the page back.  Meanwhile the device's page table maps them
 * for atomics (hmm_mirror_atomic_add_u64(), hmm_mirror_check_exclusive()).
 * Context: no driver lock held (it invalidates).
 * Return: 0; -EINVAL (misaligned or empty range); -EFAULT (a page is not
 * mapped, not readable, or not private anonymous memory of this process
 * alone); -EPERM (not writable); -EBUSY (a page is being migrated or is
 * exclusive to another device); -ENOMEM; -EOPNOTSUPP (no userfaultfd).
 */
int hmm_make_device_exclusive(struct hmm_mirror *mirror, uint64_t start, uint64_t end);

/**
 * hmm_mirror_check_exclusive() - is every page of [start, end) mapped for
 * atomics in the device's page table now?
 * Return: 0 if so; -EPERM if a page is not; -EINVAL.
 */
int hmm_mirror_check_exclusive(struct hmm_mirror *mirror, uint64_t start, uint64_t end);

/**
 * hmm_mirror_atomic_add_u64() - a device atomic: add v to the aligned
 * 8-byte word at va and return its previous value in *old (if not NULL).
 * A page the device does not hold exclusively is taken first (an atomic
 * fault), as hmm_make_device_exclusive() does.
 * Return: 0; -EINVAL (misaligned); as hmm_make_device_exclusive().
 */
int hmm_mirror_atomic_add_u64(struct hmm_mirror *mirror, uint64_t va, uint64_t v,
			      uint64_t *old);

/*
 * Device kernels: a C function run on the device's compute units, for every
 * work item of a grid, whose loads and stores go through the device's TLB
 * and page table and so use the CPU's own pointers.
 */

/** struct hmm_kernel - one kernel instance on a compute unit (opaque). */
struct hmm_kernel;

/** hmm_kernel_fn - a kernel: called once per work item. */
typedef void (*hmm_kernel_fn)(struct hmm_kernel *k, void *arg);

/**
 * hmm_launch() - run fn(k, arg) for every work item 0 .. nitems - 1 on the
 * device's compute units, and wait for the end.
 *
 * Items are handed out in order to whichever unit is free.  A device
 * access that fails (see hmm_kernel_read()) stops the launch: no new item
 * starts, the instances running finish, and the error is returned.
 * Context: may sleep; not from a kernel.  One launch at a time per mirror
 * (others wait).
 * Return: 0; the first access error (-EFAULT, -EPERM, -ENOMEM); -EINVAL
 * (NULL mirror or fn); -EDEADLK (called from a kernel); -EAGAIN (no thread
 * for a compute unit).
 */
int hmm_launch(struct hmm_mirror *mirror, uint64_t nitems, hmm_kernel_fn fn, void *arg);

/** hmm_kernel_item() - the work item this instance runs. */
uint64_t hmm_kernel_item(const struct hmm_kernel *k);

/** hmm_kernel_unit() - the compute unit it runs on, 0 .. units - 1. */
unsigned int hmm_kernel_unit(const struct hmm_kernel *k);

/**
 * hmm_kernel_read() - the device reads len bytes at ptr into buf.
 * hmm_kernel_write() - the device writes len bytes from buf at ptr.
 *
 * The fast path (a TLB hit) takes a few nanoseconds; a miss looks in the
 * page table, and a page missing there is a device fault, served as for
 * hmm_mirror_read().  An invalidation waits for an access in flight.
 * After a failed access the launch is stopping: every later access of
 * the instance fails at once, and reads give zeros.
 * Return: 0, -EFAULT, -EPERM, -ENOMEM.
 */
int hmm_kernel_read(struct hmm_kernel *k, const void *ptr, void *buf, size_t len);
int hmm_kernel_write(struct hmm_kernel *k, void *ptr, const void *buf, size_t len);

/**
 * struct hmm_kernel_span - a range a kernel wants to use directly.
 * @ptr: in; the first byte, as the CPU addresses it.
 * @len: in; bytes, at least 1.
 * @write: in; the kernel will store to it too.
 * @addr: out; where the kernel loads and stores it.
 */
struct hmm_kernel_span {
	void *ptr;
	size_t len;
	bool write;
	void *addr;
};

/**
 * hmm_kernel_map() - translate n spans for the kernel's direct use.
 *
 * Every page of every span is translated through the unit's TLB and page
 * table (faulting as needed), all under one TLB generation: if a fault for
 * one span invalidates another, all are translated again.  The kernel may
 * then use each span's addr with ordinary loads and stores, at the speed of
 * CPU code, until its next call into libhmm; invalidations of the spans
 * wait until then, so it must not block meanwhile.
 * Context: a kernel.
 * Return: 0; -EFAULT or -EPERM (the launch stops, as for any access);
 * -ERANGE (a span is not one piece of memory in the device's view: copy it
 * with hmm_kernel_read() instead; the launch goes on); -EINVAL.
 */
int hmm_kernel_map(struct hmm_kernel *k, struct hmm_kernel_span *spans, unsigned int n);

/** hmm_kernel_failed() - has this launch had an access error? */
bool hmm_kernel_failed(const struct hmm_kernel *k);

/* Typed loads and stores: natural alignment, never across a page. */
double hmm_ld_f64(struct hmm_kernel *k, const double *p);
float hmm_ld_f32(struct hmm_kernel *k, const float *p);
uint64_t hmm_ld_u64(struct hmm_kernel *k, const uint64_t *p);
uint32_t hmm_ld_u32(struct hmm_kernel *k, const uint32_t *p);
void hmm_st_f64(struct hmm_kernel *k, double *p, double v);
void hmm_st_f32(struct hmm_kernel *k, float *p, float v);
void hmm_st_u64(struct hmm_kernel *k, uint64_t *p, uint64_t v);
void hmm_st_u32(struct hmm_kernel *k, uint32_t *p, uint32_t v);

/*
 * Migration of anonymous memory, in the kernel's three phases
 * (migrate_vma_setup, migrate_vma_pages, migrate_vma_finalize).
 *
 * Private anonymous memory (malloc, MAP_PRIVATE | MAP_ANONYMOUS) can move
 * to an embedded device's memory.  Its CPU page is then gone: the next CPU
 * access faults (served through a userfaultfd) and brings the page back to
 * host RAM, as the kernel's migrate_to_ram does for device-private pages.
 * The device that holds a page sees it present through hmm_range_fault()
 * (dev_private_owner), another device does not (a fault brings it back).
 *
 * Each page has one word in src and one in dst.  A word is the address of
 * the page's memory, divided by the page size and shifted by
 * HMM_MIGRATE_PFN_SHIFT (hmm_migrate_pfn()), plus flags:
 * HMM_MIGRATE_PFN_VALID (there is memory), HMM_MIGRATE_PFN_MIGRATE (the
 * page may move; the only flag a source without memory has: a hole, to be
 * filled with zeros) and HMM_MIGRATE_PFN_WRITE (the mapping is writable).
 *
 * A driver:
 *   1. hmm_migrate_vma_setup(): the pages that can move are collected and
 *      locked (a CPU write to them waits; reads go on), and every mirror
 *      is invalidated (HMM_NOTIFY_MIGRATE with the owner).
 *   2. For each src word with HMM_MIGRATE_PFN_MIGRATE, allocates a
 *      destination (hmm_device_page_alloc() when moving to a device; a
 *      page of its own when moving to host RAM), copies the data
 *      (hmm_device_dma(); zeros for a hole) and sets dst to
 *      hmm_migrate_pfn(destination).  A dst word left 0 keeps that page.
 *   3. hmm_migrate_vma_pages(): the pages move; a page that could not
 *      (unmapped or cleared meanwhile, no destination) loses
 *      HMM_MIGRATE_PFN_MIGRATE in src.
 *   4. hmm_migrate_vma_finalize(): the pages are unlocked, and the memory
 *      that is no longer used goes back: the old device pages, and the
 *      device destinations of pages that did not move.  A host RAM
 *      destination is the caller's to free afterwards (its contents were
 *      copied into place).
 * Between setup and finalize the caller must not touch the range itself
 * (a write would wait for the end of its own migration).
 */
#define HMM_MIGRATE_PFN_VALID (1ULL << 0)
#define HMM_MIGRATE_PFN_MIGRATE (1ULL << 1)
#define HMM_MIGRATE_PFN_WRITE (1ULL << 3)
#define HMM_MIGRATE_PFN_SHIFT 6

/** hmm_migrate_pfn() - the word for the page-aligned memory at addr, VALID. */
static inline uint64_t hmm_migrate_pfn(const void *addr)
{
	return (((uint64_t)(uintptr_t)addr >> 12) << HMM_MIGRATE_PFN_SHIFT) | HMM_MIGRATE_PFN_VALID;
}

/** hmm_migrate_pfn_to_addr() - the memory a VALID word names. */
static inline void *hmm_migrate_pfn_to_addr(uint64_t mpfn)
{
	return (void *)(uintptr_t)((mpfn >> HMM_MIGRATE_PFN_SHIFT) << 12);
}

/* Which pages setup collects: exactly one of these. */
#define HMM_MIGRATE_VMA_SELECT_SYSTEM (1u << 0)         /* pages in host RAM */
#define HMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE (1u << 1) /* pages on pgmap_owner */

/**
 * struct hmm_migrate_vma - the arguments of the three phases.
 * @start: first byte, page aligned.
 * @end: one past the last byte, page aligned, greater than start.
 * @src: (end - start) / page size words; out from setup, updated by pages.
 * @dst: as many words; set by the caller between setup and pages.
 * @npages: out: the number of pages of the range.
 * @cpages: out: the number of pages setup collected.
 * @pgmap_owner: the device: where SELECT_SYSTEM pages go, or whose pages
 *	SELECT_DEVICE_PRIVATE collects.
 * @flags: one HMM_MIGRATE_VMA_SELECT_* value.
 * @reserved: must be 0.
 */
struct hmm_migrate_vma {
	uint64_t start;
	uint64_t end;
	uint64_t *src;
	uint64_t *dst;
	uint64_t npages;
	uint64_t cpages;
	struct hmm_device *pgmap_owner;
	uint32_t flags;
	uint32_t reserved;
};

/**
 * hmm_migrate_vma_setup() - collect and lock the pages of the range that
 * can move.  SELECT_SYSTEM collects pages of private anonymous mappings
 * that are readable, either present and used by this process alone, or
 * never touched (holes, and the shared zero page); pages of shared or file
 * mappings, pages shared with a child after fork(), swapped-out pages and
 * pages on a device are left (src 0).  SELECT_DEVICE_PRIVATE collects the
 * pages that are on pgmap_owner.
 * Context: no driver lock held (it invalidates).
 * Return: 0 (cpages may be 0); -EINVAL (misaligned or empty range, NULL
 * src, dst or pgmap_owner, flags not one selector, reserved not 0);
 * -EOPNOTSUPP (no userfaultfd here); -ENOMEM.
 */
int hmm_migrate_vma_setup(struct hmm_migrate_vma *args);
/** hmm_migrate_vma_pages() - move the collected pages that have a destination. */
void hmm_migrate_vma_pages(struct hmm_migrate_vma *args);
/** hmm_migrate_vma_finalize() - unlock the pages and release unused memory. */
void hmm_migrate_vma_finalize(struct hmm_migrate_vma *args);

/**
 * hmm_device_page_alloc() - a page of the device's memory, for migration
 * destinations.  On a device of an hmmfs mount the page is reserved from
 * the daemon (hmm_device_attach()).
 * Return: 0; -EINVAL; -ENOSPC (the device is full); -ENOMEM; for a device
 * of a mount, -ECONNRESET (its daemon is gone) or -EPROTO.
 */
int hmm_device_page_alloc(struct hmm_device *dev, void **page);
/** hmm_device_page_free() - give back a page hmm_device_page_alloc() gave. */
void hmm_device_page_free(struct hmm_device *dev, void *page);
/**
 * hmm_device_dma() - copy len bytes with the device's DMA engines (its
 * bandwidth and latency apply) and wait for the copy.
 * Return: 0; -EINVAL; -ENOMEM.
 */
int hmm_device_dma(struct hmm_device *dev, void *dst, const void *src, size_t len);

/**
 * hmm_migrate_to_device() - move the anonymous pages of [start, start +
 * len) to dev, all three phases with dev's DMA engines.  Whole pages move,
 * with whatever else they hold (see NOTES in hmm_migrate_vma(3)).
 * @moved: if not NULL, the number of pages that moved.
 * Return: 0; -ENOENT (some pages could not move: shared, file-backed or
 * unmapped memory, pages used by another process, libhmm's own memory);
 * -ENOSPC (the device is full; the pages that fit moved); -EINVAL,
 * -EOPNOTSUPP, -ENOMEM; or another error of hmm_device_page_alloc() (the pages before it moved).
 */
int hmm_migrate_to_device(struct hmm_device *dev, void *start, size_t len, uint64_t *moved);
/**
 * hmm_migrate_to_ram() - bring the anonymous pages of [start, start + len)
 * that are on any device back to host RAM.
 * Return: 0; -EINVAL; -ENOMEM.
 */
int hmm_migrate_to_ram(void *start, size_t len, uint64_t *moved);
/**
 * hmm_device_evict() - bring every anonymous page on dev back to host RAM,
 * in whatever process range it is (the kernel's migrate_device_range, as a
 * driver uses it when its memory goes away), and wait for the pages that
 * CPU faults were bringing back meanwhile.
 * Context: no driver lock held (it invalidates).
 * Return: 0; -EINVAL (NULL); -ENODEV (a device inherited across fork()).
 */
int hmm_device_evict(struct hmm_device *dev);

/**
 * struct hmm_device_stats - an embedded device's memory and migrations.
 * @capacity: bytes of device memory.
 * @used: bytes in use.
 * @pages_in: pages migrated to the device.
 * @pages_out: pages migrated away from it.
 * @cpu_faults: CPU accesses that brought a page back.
 */
struct hmm_device_stats {
	uint64_t capacity;
	uint64_t used;
	uint64_t pages_in;
	uint64_t pages_out;
	uint64_t cpu_faults;
};

/** hmm_device_stats() - read the counters.  Return: 0, -EINVAL. */
int hmm_device_stats(struct hmm_device *dev, struct hmm_device_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* HMM_H */
