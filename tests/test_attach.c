/* SPDX-License-Identifier: MIT */
/*
 * test_attach.c - a device of a real hmmfs mount, attached with
 * hmm_device_attach(): its mirror uses the pages of mapped files that lie
 * on it in place (no CPU fault brings them back), writes land in the file,
 * the daemon's moves invalidate the mirror first, other devices and the CPU
 * still bring pages back, read-only mappings stay read-only, kernels run
 * on the device memory, and a migration racing device reads never shows a
 * stale page.  Anonymous memory migrates to the mount's device too, held
 * by the process but counted by the daemon.  On a coherent device, the
 * CPU's copy of a page and the device's in-place use take turns: every
 * reader sees the last write, racing or not, and the pages stay put.
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"

#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define NPAGES 16
#define LEN (NPAGES * PAGE)

static void setup(void)
{
	mnt_setup_opts("host_mem=64M,devices=2,device_mem=16M");
}

TestSuite(attach, .init = setup, .fini = mnt_teardown, .timeout = 120);

struct mapped_file {
	int fd;
	unsigned char *p;
};

/* A file of NPAGES pages of pattern 7 (or empty, for a kernel's array),
 * opened with flags, mapped shared with prot, its pages moved to dest. */
static struct mapped_file map_file(const char *rel, int flags, int prot, int dest)
{
	struct mapped_file f;
	int fd = create_file(rel);

	write_pattern(fd, 0, LEN, 7);
	close(fd);
	f.fd = open(mp(rel), flags | O_CLOEXEC);
	cr_assert_geq(f.fd, 0, "open: %m");
	f.p = mmap(NULL, LEN, prot, MAP_SHARED, f.fd, 0);
	cr_assert_neq(f.p, MAP_FAILED, "mmap: %m");
	if (dest != HMM_LOC_HOST)
		cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, dest, NULL), 0);
	return f;
}

static void unmap_file(struct mapped_file *f)
{
	munmap(f->p, LEN);
	close(f->fd);
}

static uint64_t cpu_faults(int fd)
{
	struct hmm_file_stat st;

	cr_assert_eq(hmm_file_stat(fd, &st), 0);
	return st.cpu_faults;
}

static uint64_t on_device(int fd, unsigned k)
{
	struct hmm_file_stat st;

	cr_assert_eq(hmm_file_stat(fd, &st), 0);
	return st.device_bytes[k] / PAGE;
}

static void attach(unsigned index, struct hmm_device **dev, struct hmm_mirror **m)
{
	cr_assert_eq(hmm_device_attach(mnt.dir, index, dev), 0);
	cr_assert_eq(hmm_mirror_create(*dev, m), 0);
}

static void detach(struct hmm_device *dev, struct hmm_mirror *m)
{
	hmm_mirror_destroy(m);
	cr_assert_eq(hmm_device_destroy(dev), 0);
}

static uint64_t va(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

/* The mirror reads len bytes of f's pattern from device memory: no page
 * comes back to host RAM for it. */
static void expect_read_in_place(struct hmm_mirror *m, const struct mapped_file *f, size_t len)
{
	static unsigned char buf[LEN];
	uint64_t faults = cpu_faults(f->fd);

	memset(buf, 0, len);
	cr_assert_eq(hmm_mirror_read(m, va(f->p), buf, len), 0);
	cr_assert_eq(pattern_check(buf, len, 0, 7), -1);
	cr_assert_eq(cpu_faults(f->fd), faults, "a page came back to host RAM");
}

Test(attach, the_device_reads_its_pages_in_place)
{
	struct mapped_file f = map_file("r", O_RDWR, PROT_READ | PROT_WRITE, 0);
	struct hmm_device *dev;
	struct hmm_mirror *m;

	attach(0, &dev, &m);
	expect_read_in_place(m, &f, LEN);
	cr_assert_eq(on_device(f.fd, 0), NPAGES);
	detach(dev, m);
	unmap_file(&f);
}

Test(attach, a_device_write_is_the_files_data)
{
	struct mapped_file f = map_file("w", O_RDWR, PROT_READ | PROT_WRITE, 0);
	unsigned char buf[PAGE], want[PAGE];
	struct hmm_device *dev;
	struct hmm_mirror *m;
	uint64_t faults;

	attach(0, &dev, &m);
	faults = cpu_faults(f.fd);
	memset(want, 0x5c, sizeof(want));
	cr_assert_eq(hmm_mirror_write(m, va(f.p + 3 * PAGE), want, PAGE), 0);
	cr_assert_eq(cpu_faults(f.fd), faults);
	cr_assert_eq(on_device(f.fd, 0), NPAGES, "the write stayed on the device");
	/* The CPU sees it, bringing the page back... */
	cr_assert_eq(memcmp(f.p + 3 * PAGE, want, PAGE), 0);
	cr_assert_gt(cpu_faults(f.fd), faults);
	/* ...and so does read(2) after the rest came back too. */
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, HMM_LOC_HOST, NULL), 0);
	cr_assert_eq(pread(f.fd, buf, PAGE, 3 * PAGE), PAGE);
	cr_assert_eq(memcmp(buf, want, PAGE), 0);
	detach(dev, m);
	unmap_file(&f);
}

Test(attach, the_daemon_moving_pages_invalidates_the_mirror_first)
{
	struct mapped_file f = map_file("mv", O_RDWR, PROT_READ | PROT_WRITE, 0);
	static unsigned char buf[LEN];
	struct hmm_mirror_stats before, after;
	struct hmm_device *dev;
	struct hmm_mirror *m;

	attach(0, &dev, &m);
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, LEN), 0);
	cr_assert_eq(hmm_mirror_stats(m, &before), 0);
	cr_assert_geq(before.mapped_pages, NPAGES);
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, HMM_LOC_HOST, NULL), 0);
	cr_assert_eq(hmm_mirror_stats(m, &after), 0);
	cr_assert_gt(after.invalidations, before.invalidations);
	cr_assert_geq(after.pages_invalidated - before.pages_invalidated, NPAGES,
		      "every page mapped on the device was dropped");
	/* Now in host RAM: the mirror maps the CPU's pages. */
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, LEN), 0);
	cr_assert_eq(pattern_check(buf, LEN, 0, 7), -1);
	/* And back on the device, in place again. */
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, 0, NULL), 0);
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, LEN), 0);
	cr_assert_eq(pattern_check(buf, LEN, 0, 7), -1);
	cr_assert_eq(on_device(f.fd, 0), NPAGES);
	detach(dev, m);
	unmap_file(&f);
}

Test(attach, another_device_brings_the_page_back_as_the_kernel_does)
{
	struct mapped_file f = map_file("other", O_RDWR, PROT_READ | PROT_WRITE, 0);
	unsigned char buf[PAGE];
	struct hmm_device *dev1;
	struct hmm_mirror *m1;
	uint64_t faults;

	attach(1, &dev1, &m1);
	faults = cpu_faults(f.fd);
	cr_assert_eq(hmm_mirror_read(m1, va(f.p + 2 * PAGE), buf, PAGE), 0);
	cr_assert_eq(pattern_check(buf, PAGE, 2 * PAGE, 7), -1);
	cr_assert_gt(cpu_faults(f.fd), faults, "device 1 cannot use device 0's page");
	cr_assert_lt(on_device(f.fd, 0), NPAGES);
	detach(dev1, m1);
	unmap_file(&f);
}

Test(attach, a_read_only_mapping_gives_read_only_device_access)
{
	struct mapped_file f = map_file("ro", O_RDONLY, PROT_READ, 0);
	unsigned char buf[PAGE], junk[PAGE] = { 1 };
	struct hmm_device *dev;
	struct hmm_mirror *m;
	uint64_t faults;

	attach(0, &dev, &m);
	expect_read_in_place(m, &f, PAGE);
	faults = cpu_faults(f.fd);
	cr_assert_eq(hmm_mirror_write(m, va(f.p), junk, PAGE), -EPERM);
	cr_assert_eq(cpu_faults(f.fd), faults);
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, PAGE), 0);
	cr_assert_eq(pattern_check(buf, PAGE, 0, 7), -1, "the refused write changed nothing");
	detach(dev, m);
	unmap_file(&f);
}

struct add_args {
	double *x;
};

static void add_one(struct hmm_kernel *k, void *arg)
{
	struct add_args *a = arg;
	uint64_t i = hmm_kernel_item(k);

	hmm_st_f64(k, &a->x[i], hmm_ld_f64(k, &a->x[i]) + 1.0);
}

Test(attach, a_kernel_updates_a_mapped_file_in_device_memory)
{
	size_t n = LEN / sizeof(double);
	int fd = create_file("k");
	struct add_args a;
	struct hmm_device *dev;
	struct hmm_mirror *m;
	double *x;
	uint64_t faults;

	cr_assert_eq(ftruncate(fd, LEN), 0);
	x = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(x, MAP_FAILED);
	for (size_t i = 0; i < n; i++)
		x[i] = (double)i;
	cr_assert_eq(msync(x, LEN, MS_SYNC), 0);
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, 0, NULL), 0);
	cr_assert_eq(on_device(fd, 0), NPAGES);
	attach(0, &dev, &m);
	faults = cpu_faults(fd);
	a.x = x;
	cr_assert_eq(hmm_launch(m, n, add_one, &a), 0);
	cr_assert_eq(cpu_faults(fd), faults, "the kernel ran on device memory");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(x[i], (double)i + 1.0, "x[%zu]", i);
	detach(dev, m);
	munmap(x, LEN);
	close(fd);
}

Test(attach, bad_arguments_are_refused)
{
	struct hmm_device *dev;
	struct hmm_device_stats st;

	cr_assert_eq(hmm_device_attach(NULL, 0, &dev), -EINVAL);
	cr_assert_eq(hmm_device_attach(mnt.dir, 0, NULL), -EINVAL);
	cr_assert_eq(hmm_device_attach(mnt.dir, HMM_ATTACH_OBSERVE, &dev), -EINVAL);
	cr_assert_eq(hmm_device_attach("/proc", 0, &dev), -ENOTTY);
	cr_assert_eq(hmm_device_attach(mnt.dir, 2, &dev), -ENODEV);
	cr_assert_eq(hmm_device_attach(mp("nothing/here"), 0, &dev), -ENOENT);
	cr_assert_eq(hmm_device_attach(mnt.dir, 0, &dev), 0);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.capacity, 16 << 20, "the daemon's device");
	cr_assert_eq(hmm_device_stats(dev, NULL), -EINVAL);
	cr_assert_eq(hmm_device_destroy(dev), 0);
}

/* Bytes of device k's memory in use, as the daemon counts them. */
static uint64_t daemon_used(unsigned k)
{
	struct hmm_device_info info;
	int fd = open(mnt.dir, O_RDONLY | O_DIRECTORY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(hmm_device_info(fd, k, &info), 0);
	close(fd);
	return info.used;
}

static unsigned char *anon_pattern(size_t len, int seed)
{
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	pattern_fill(p, len, 0, seed);
	return p;
}

Test(attach, anonymous_memory_migrates_to_the_mounts_device_and_counts_there)
{
	enum { N = 64 };
	unsigned char *anon = anon_pattern(N * PAGE, 11), buf[PAGE];
	uint64_t before = daemon_used(0);
	struct hmm_device_stats st0, st;
	struct hmm_device *dev;
	struct hmm_mirror *m;

	attach(0, &dev, &m);
	cr_assert_eq(hmm_device_stats(dev, &st0), 0);
	cr_assert_eq(hmm_migrate_to_device(dev, anon, N * PAGE, NULL), 0);
	cr_assert_geq(daemon_used(0), before + N * PAGE, "the device's memory is the mount's");
	cr_assert_leq(daemon_used(0), before + (2 << 20), "reserved in 2 MiB steps at most");
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.pages_in - st0.pages_in, N);
	/* The device reads its own pages in place... */
	cr_assert_eq(hmm_mirror_read(m, va(anon + 5 * PAGE), buf, PAGE), 0);
	cr_assert_eq(pattern_check(buf, PAGE, 5 * PAGE, 11), -1);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.cpu_faults, st0.cpu_faults);
	/* ...and the CPU brings every page back on touch, data intact. */
	cr_assert_eq(pattern_check(anon, N * PAGE, 0, 11), -1);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.cpu_faults - st0.cpu_faults, N);
	cr_assert_eq(daemon_used(0), before, "the reservation went with the last page");
	/* Again, then the device goes with pages on it: they come back. */
	cr_assert_eq(hmm_migrate_to_device(dev, anon, N * PAGE, NULL), 0);
	cr_assert_gt(daemon_used(0), before);
	detach(dev, m);
	cr_assert_eq(daemon_used(0), before);
	cr_assert_eq(pattern_check(anon, N * PAGE, 0, 11), -1);
	munmap(anon, N * PAGE);
}

Test(attach, a_full_device_refuses_anonymous_memory_and_keeps_the_files_pages)
{
	size_t len = 16 << 20;
	int fd = create_file("full");
	unsigned char *anon = anon_pattern(4 * PAGE, 12);
	struct hmm_device *dev;
	struct hmm_mirror *m;

	write_pattern(fd, 0, len, 3);
	cr_assert_eq(hmm_file_migrate(fd, 0, 0, 0, NULL), 0);
	cr_assert_eq(on_device(fd, 0), len / PAGE);
	attach(0, &dev, &m);
	cr_assert_eq(hmm_migrate_to_device(dev, anon, 4 * PAGE, NULL), -ENOSPC);
	cr_assert_eq(on_device(fd, 0), len / PAGE, "no page of the file was evicted");
	cr_assert_eq(pattern_check(anon, 4 * PAGE, 0, 12), -1);
	/* Room made: now it fits. */
	cr_assert_eq(hmm_file_migrate(fd, 0, PAGE * 4, HMM_LOC_HOST, NULL), 0);
	cr_assert_eq(hmm_migrate_to_device(dev, anon, 4 * PAGE, NULL), 0);
	cr_assert_eq(daemon_used(0), len, "the anonymous pages hold their room");
	cr_assert_eq(pattern_check(anon, 4 * PAGE, 0, 12), -1);
	detach(dev, m);
	expect_pattern(fd, 0, len, 3);
	close(fd);
	munmap(anon, 4 * PAGE);
}

/* A thread moving its own anonymous buffer to the device and touching it
 * back, round after round. */
struct anon_mover {
	struct hmm_device *dev;
	unsigned char *buf;
	int seed;
	int err;         /* the first failure: -errno, or a round's number + 1 */
};

#define MOVER_PAGES 32
#define MOVER_ROUNDS 40

static void *anon_mover_main(void *arg)
{
	struct anon_mover *a = arg;

	for (int r = 0; r < MOVER_ROUNDS && !a->err; r++) {
		int err = hmm_migrate_to_device(a->dev, a->buf, MOVER_PAGES * PAGE, NULL);

		if (err && err != -ENOSPC) {
			a->err = err;
			break;
		}
		/* Every page comes back on touch, then changes. */
		if (pattern_check(a->buf, MOVER_PAGES * PAGE, 0, a->seed + r) != -1)
			a->err = r + 1;
		pattern_fill(a->buf, MOVER_PAGES * PAGE, 0, a->seed + r + 1);
	}
	return NULL;
}

Test(attach, anonymous_migrations_racing_file_migrations_keep_data_and_account_exactly)
{
	struct mapped_file f = map_file("race-anon", O_RDWR, PROT_READ | PROT_WRITE, 0);
	uint64_t before = daemon_used(0) - on_device(f.fd, 0) * PAGE;
	struct anon_mover a[2];
	struct hmm_device *dev;
	struct hmm_mirror *m;
	pthread_t t[2];

	attach(0, &dev, &m);
	for (int i = 0; i < 2; i++) {
		a[i] = (struct anon_mover){ dev, anon_pattern(MOVER_PAGES * PAGE, 20 * i), 20 * i, 0 };
		cr_assert_eq(pthread_create(&t[i], NULL, anon_mover_main, &a[i]), 0);
	}
	for (int r = 0; r < 60; r++)
		cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, r % 2 ? 0 : HMM_LOC_HOST, NULL), 0);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(pthread_join(t[i], NULL), 0);
		cr_assert_eq(a[i].err, 0, "mover %d: %d", i, a[i].err);
		cr_assert_eq(pattern_check(a[i].buf, MOVER_PAGES * PAGE, 0,
					   20 * i + MOVER_ROUNDS), -1);
		munmap(a[i].buf, MOVER_PAGES * PAGE);
	}
	expect_read_in_place(m, &f, LEN);
	cr_assert_eq(daemon_used(0), before + on_device(f.fd, 0) * PAGE,
		     "every reservation was given back");
	detach(dev, m);
	unmap_file(&f);
}

Test(attach, a_forked_child_leaves_the_parents_session_alone)
{
	unsigned char *anon = anon_pattern(8 * PAGE, 31), *mine = anon_pattern(8 * PAGE, 32);
	uint64_t before = daemon_used(0);
	struct hmm_device *dev;
	int status;
	pid_t pid;

	skip_under_sanitizers_if_children_start_threads();
	cr_assert_eq(hmm_device_attach(mnt.dir, 0, &dev), 0);
	cr_assert_eq(hmm_migrate_to_device(dev, anon, 8 * PAGE, NULL), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* The device is the parent's (libhmm(3), "Threads"): no
		 * memory for the child from its session, and destroying it
		 * leaves the session to the parent.  (The pages are written
		 * first: shared copy-on-write ones would not move anyway.) */
		int err;

		pattern_fill(mine, 8 * PAGE, 0, 33);
		err = hmm_migrate_to_device(dev, mine, 8 * PAGE, NULL);
		if (err != -ENODEV)
			_exit(100 + (-err & 0x7f));
		if (hmm_device_destroy(dev) != 0)
			_exit(2);
		_exit(pattern_check(mine, 8 * PAGE, 0, 33) == -1 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %#x", status);
	/* The parent's session goes on. */
	cr_assert_eq(hmm_migrate_to_device(dev, mine, 8 * PAGE, NULL), 0);
	cr_assert_gt(daemon_used(0), before);
	cr_assert_eq(pattern_check(anon, 8 * PAGE, 0, 31), -1);
	cr_assert_eq(pattern_check(mine, 8 * PAGE, 0, 32), -1);
	cr_assert_eq(hmm_device_destroy(dev), 0);
	cr_assert_eq(daemon_used(0), before);
	munmap(anon, 8 * PAGE);
	munmap(mine, 8 * PAGE);
}

Test(attach, a_killed_process_gives_its_device_memory_back)
{
	uint64_t before = daemon_used(1);
	int pipefd[2], status;
	char c;
	pid_t pid;

	skip_under_sanitizers_if_children_start_threads();
	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		size_t len = 8 << 20;
		struct hmm_device *dev;
		unsigned char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (anon == MAP_FAILED)
			_exit(1);
		memset(anon, 9, len);
		if (hmm_device_attach(mnt.dir, 1, &dev) ||
		    hmm_migrate_to_device(dev, anon, len, NULL))
			_exit(1);
		if (write(pipefd[1], "m", 1) != 1)
			_exit(1);
		pause();
		_exit(1);
	}
	close(pipefd[1]);
	cr_assert_eq(read(pipefd[0], &c, 1), 1, "the child could not migrate");
	cr_assert_geq(daemon_used(1), before + (8 << 20));
	kill(pid, SIGKILL);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	close(pipefd[0]);
	/* The daemon sees the session end shortly after the death. */
	for (int i = 0; i < 500 && daemon_used(1) != before; i++)
		usleep(10000);
	cr_assert_eq(daemon_used(1), before);
}

static int attach_fails(const char *path)
{
	struct hmm_device *dev;
	int err = hmm_device_attach(path, 0, &dev);

	if (err) {
		errno = -err;
		return -1;
	}
	hmm_device_destroy(dev);
	return 0;
}

/*
 * A driver allocating device memory under its own lock, while the daemon
 * invalidates a file whose callback needs that lock: the allocation's
 * answer from the daemon must not wait behind that invalidation.
 */
struct driver {
	pthread_mutex_t lock;
	bool entered; /* atomic: the callback is waiting for the lock */
	int fd;
	int err;
};

static bool driver_invalidate(struct hmm_interval_notifier *sub,
			      const struct hmm_notifier_range *r, uint64_t seq)
{
	struct driver *d = hmm_interval_notifier_priv(sub);

	(void)r;
	hmm_interval_set_seq(sub, seq);
	__atomic_store_n(&d->entered, true, __ATOMIC_RELEASE);
	pthread_mutex_lock(&d->lock);
	pthread_mutex_unlock(&d->lock);
	return true;
}

static const struct hmm_interval_notifier_ops driver_ops = { .invalidate = driver_invalidate };

static void *migrate_to_host(void *arg)
{
	struct driver *d = arg;

	d->err = hmm_file_migrate(d->fd, 0, 0, HMM_LOC_HOST, NULL);
	return NULL;
}

Test(attach, a_driver_allocating_under_its_lock_is_not_blocked_by_an_invalidation)
{
	struct mapped_file f = map_file("drv", O_RDWR, PROT_READ | PROT_WRITE, 0);
	struct driver d = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = f.fd };
	struct hmm_interval_notifier *sub;
	unsigned char buf[PAGE];
	struct hmm_device *dev;
	struct hmm_mirror *m;
	pthread_t t;
	void *page;

	attach(0, &dev, &m);
	/* The mirror has met the file: its invalidations now come here. */
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, PAGE), 0);
	cr_assert_eq(hmm_interval_notifier_insert(va(f.p), LEN, &driver_ops, &d, &sub), 0);
	pthread_mutex_lock(&d.lock);
	cr_assert_eq(pthread_create(&t, NULL, migrate_to_host, &d), 0);
	while (!__atomic_load_n(&d.entered, __ATOMIC_ACQUIRE))
		usleep(1000);
	/* The daemon waits for our answer; we ask it for memory. */
	cr_assert_eq(hmm_device_page_alloc(dev, &page), 0);
	pthread_mutex_unlock(&d.lock);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(d.err, 0, "the migration: %s", strerror(-d.err));
	hmm_device_page_free(dev, page);
	hmm_interval_notifier_remove(sub);
	detach(dev, m);
	expect_pattern(f.fd, 0, LEN, 7);
	unmap_file(&f);
}

Test(attach, another_user_is_refused)
{
	assert_nobody_gets(attach_fails, mnt.dir, EACCES);
}

Test(attach, a_process_killed_while_using_device_memory_hurts_nobody)
{
	struct mapped_file f = map_file("kill", O_RDWR, PROT_READ | PROT_WRITE, 0);
	int status;

	skip_under_sanitizers_if_children_start_threads();
	for (int round = 0; round < 3; round++) {
		pid_t pid = fork();

		cr_assert_geq(pid, 0);
		if (pid == 0) {
			struct hmm_device *dev;
			struct hmm_mirror *m;
			unsigned char buf[PAGE];

			if (hmm_device_attach(mnt.dir, 0, &dev) || hmm_mirror_create(dev, &m) ||
			    hmm_mirror_read(m, va(f.p), buf, PAGE))
				_exit(1);
			raise(SIGKILL);
			_exit(1);
		}
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFSIGNALED(status), "the child failed before it was killed");
	}
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, HMM_LOC_HOST, NULL), 0);
	expect_pattern(f.fd, 0, LEN, 7);
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, 1, NULL), 0);
	expect_pattern(f.fd, 0, LEN, 7);
	unmap_file(&f);
}

/* The race: migrations back and forth against device reads. */
struct racer {
	int fd;
	bool stop; /* atomic */
	int err;
};

static void *migrator(void *arg)
{
	struct racer *r = arg;

	for (int i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && i < 400 && !r->err; i++)
		r->err = hmm_file_migrate(r->fd, 0, 0, i % 2 ? 0 : HMM_LOC_HOST, NULL);
	__atomic_store_n(&r->stop, true, __ATOMIC_RELEASE);
	return NULL;
}

Test(attach, device_reads_racing_migrations_never_see_a_stale_page)
{
	struct mapped_file f = map_file("race", O_RDWR, PROT_READ | PROT_WRITE, 0);
	static unsigned char buf[LEN];
	struct racer r = { .fd = f.fd };
	struct hmm_device *dev;
	struct hmm_mirror *m;
	pthread_t t;
	unsigned reads = 0;

	attach(0, &dev, &m);
	cr_assert_eq(pthread_create(&t, NULL, migrator, &r), 0);
	while (!__atomic_load_n(&r.stop, __ATOMIC_ACQUIRE)) {
		memset(buf, 0, sizeof(buf));
		cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, LEN), 0);
		cr_assert_eq(pattern_check(buf, LEN, 0, 7), -1, "read %u", reads);
		reads++;
	}
	pthread_join(t, NULL);
	cr_assert_eq(r.err, 0);
	cr_assert_gt(reads, 0);
	detach(dev, m);
	unmap_file(&f);
}

/* ---- mirrors of other devices hear of the daemon's changes too ---------- */

static void embedded(struct hmm_device **dev, struct hmm_mirror **m)
{
	struct hmm_device_config cfg = { .size = sizeof(cfg), .type = HMM_DEVICE_PRIVATE,
					 .memory = 1 << 20, .numa_node = -1, .compute_units = 2 };

	cr_assert_eq(hmm_device_create(&cfg, dev), 0);
	cr_assert_eq(hmm_mirror_create(*dev, m), 0);
}

/*
 * Migrate or truncate the file as another process would: through a
 * descriptor of its own, by calls libhmm does not interpose (a fork() to
 * run them elsewhere would itself invalidate every mirror), so that only
 * the daemon can tell the mirror.
 */
static void behind_its_back(const char *rel, int dest, off_t truncate_to)
{
	int fd = open(mp(rel), O_RDWR);

	cr_assert_geq(fd, 0);
	if (truncate_to >= 0)
		cr_assert_eq(ftruncate(fd, truncate_to), 0);
	else
		cr_assert_eq(hmm_file_migrate(fd, 0, 0, dest, NULL), 0);
	close(fd);
}

Test(attach, an_embedded_mirror_of_a_file_hears_of_the_daemon_migrating_it)
{
	struct mapped_file f = map_file("emb", O_RDWR, PROT_READ | PROT_WRITE, HMM_LOC_HOST);
	static unsigned char buf[LEN];
	struct hmm_mirror_stats before, after;
	struct hmm_device *dev;
	struct hmm_mirror *m;

	embedded(&dev, &m);
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, LEN), 0);
	cr_assert_eq(hmm_mirror_stats(m, &before), 0);
	cr_assert_geq(before.mapped_pages, NPAGES);
	behind_its_back("emb", 0, -1);
	cr_assert_eq(hmm_mirror_stats(m, &after), 0);
	cr_assert_geq(after.pages_invalidated - before.pages_invalidated, NPAGES,
		      "the migration took the CPU's pages: the mirror lost them first");
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(hmm_mirror_read(m, va(f.p), buf, LEN), 0);
	cr_assert_eq(pattern_check(buf, LEN, 0, 7), -1);
	hmm_mirror_destroy(m);
	cr_assert_eq(hmm_device_destroy(dev), 0);
	unmap_file(&f);
}

struct load_args {
	const uint64_t *p;
	uint64_t sum;
};

/* Load one word of each page (item = page). */
static void load_pages(struct hmm_kernel *k, void *arg)
{
	struct load_args *a = arg;
	uint64_t v = hmm_ld_u64(k, &a->p[hmm_kernel_item(k) * (PAGE / sizeof(uint64_t))]);

	__atomic_add_fetch(&a->sum, v, __ATOMIC_RELAXED);
}

Test(attach, a_kernel_on_a_file_truncated_behind_its_back_gets_efault_not_sigbus)
{
	struct mapped_file f = map_file("trunc", O_RDWR, PROT_READ | PROT_WRITE, HMM_LOC_HOST);
	struct load_args a = { (const uint64_t *)f.p, 0 };
	struct hmm_device *dev;
	struct hmm_mirror *m;

	embedded(&dev, &m);
	cr_assert_eq(hmm_launch(m, NPAGES, load_pages, &a), 0, "every page mapped");
	behind_its_back("trunc", 0, 4 * PAGE);
	/* The pages past the end are gone from the device's page table too:
	 * the kernel faults on them and gets -EFAULT, as a device would. */
	cr_assert_eq(hmm_launch(m, NPAGES, load_pages, &a), -EFAULT);
	cr_assert_eq(hmm_launch(m, 4, load_pages, &a), 0, "the first 4 pages are still there");
	hmm_mirror_destroy(m);
	cr_assert_eq(hmm_device_destroy(dev), 0);
	unmap_file(&f);
}

static void setup_no_devices(void)
{
	mnt_setup_opts("host_mem=64M");
}

/* The same timeout as the other suite: Criterion 2.4 leaks a runner
 * allocation (LeakSanitizer fails the ASan build) when suites of one
 * binary run side by side with different timeouts. */
TestSuite(attach_no_devices, .init = setup_no_devices, .fini = mnt_teardown, .timeout = 120);

Test(attach_no_devices, a_kernel_on_a_file_truncated_behind_its_back_gets_efault)
{
	struct mapped_file f = map_file("trunc", O_RDWR, PROT_READ | PROT_WRITE, HMM_LOC_HOST);
	struct load_args a = { (const uint64_t *)f.p, 0 };
	struct hmm_device *dev;
	struct hmm_mirror *m;

	cr_assert_eq(hmm_device_attach(mnt.dir, 0, &dev), -ENODEV, "nothing to attach to");
	embedded(&dev, &m);
	cr_assert_eq(hmm_launch(m, NPAGES, load_pages, &a), 0);
	behind_its_back("trunc", 0, 4 * PAGE);
	cr_assert_eq(hmm_launch(m, NPAGES, load_pages, &a), -EFAULT);
	hmm_mirror_destroy(m);
	cr_assert_eq(hmm_device_destroy(dev), 0);
	unmap_file(&f);
}

/* ---- coherent devices: the CPU's copy and the device take turns ---------- */

static void setup_coherent(void)
{
	mnt_setup_opts("host_mem=64M,devices=1,device_mem=16M,device_type=coherent");
}

TestSuite(attach_coherent, .init = setup_coherent, .fini = mnt_teardown, .timeout = 120);

/* Every page of p (LEN bytes) holds v in its first word. */
static void put_words(struct hmm_mirror *m, unsigned char *p, uint64_t v)
{
	static uint64_t buf[LEN / sizeof(uint64_t)];

	memset(buf, 0, sizeof(buf));
	for (size_t i = 0; i < NPAGES; i++)
		buf[i * PAGE / sizeof(uint64_t)] = v;
	if (m)
		cr_assert_eq(hmm_mirror_write(m, va(p), buf, LEN), 0, "device write of %lu",
			     (unsigned long)v);
	else
		for (size_t i = 0; i < NPAGES; i++)
			__atomic_store_n((uint64_t *)(p + i * PAGE), v, __ATOMIC_RELAXED);
}

/* The first word of page i of p, as the device (m) or the CPU (m NULL) reads it. */
static uint64_t word(struct hmm_mirror *m, unsigned char *p, size_t i)
{
	uint64_t v;

	if (!m)
		return __atomic_load_n((uint64_t *)(p + i * PAGE), __ATOMIC_RELAXED);
	cr_assert_eq(hmm_mirror_read(m, va(p + i * PAGE), &v, sizeof(v)), 0);
	return v;
}

static uint64_t pread_word(int fd, size_t i)
{
	uint64_t v;

	cr_assert_eq(pread(fd, &v, sizeof(v), (off_t)(i * PAGE)), (ssize_t)sizeof(v));
	return v;
}

/*
 * The CPU (stores through its mapping, not written back) and the device
 * that holds the pages (in place, or through the CPU's copy) write in
 * turn; each reader, pread(2) included, sees the last write, and the
 * pages never leave the device.
 */
Test(attach_coherent, the_cpu_and_the_device_take_turns_and_each_sees_the_others_last_write)
{
	struct mapped_file f = map_file("turns", O_RDWR, PROT_READ | PROT_WRITE, 0);
	struct hmm_device *dev;
	struct hmm_mirror *m;

	attach(0, &dev, &m);
	for (uint64_t round = 1; round <= 100; round++) {
		put_words(NULL, f.p, 2 * round);
		/* Every other round the migration takes the CPU's copy, and
		 * the device works in place. */
		if (round % 2)
			cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, 0, NULL), 0);
		for (size_t i = 0; i < NPAGES; i++)
			cr_assert_eq(word(m, f.p, i), 2 * round, "round %lu, page %zu: the device "
				     "reads the CPU's store", (unsigned long)round, i);
		put_words(m, f.p, 2 * round + 1);
		for (size_t i = 0; i < NPAGES; i++) {
			uint64_t v = word(NULL, f.p, i);

			cr_assert_eq(v, 2 * round + 1, "round %lu, page %zu: the CPU reads %lu, "
				     "not the device's write", (unsigned long)round, i,
				     (unsigned long)v);
			cr_assert_eq(pread_word(f.fd, i), 2 * round + 1);
		}
	}
	cr_assert_eq(on_device(f.fd, 0), NPAGES, "the pages stayed on the device");
	cr_assert_eq(cpu_faults(f.fd), 0, "no page came back to host RAM");
	detach(dev, m);
	unmap_file(&f);
}

/* How many pages of p (LEN bytes) are in the page cache. */
static unsigned cached_pages(const unsigned char *p)
{
	unsigned char vec[NPAGES];
	unsigned n = 0;

	cr_assert_eq(mincore((void *)p, LEN, vec), 0, "mincore: %m");
	for (size_t i = 0; i < NPAGES; i++)
		n += vec[i] & 1;
	return n;
}

/*
 * Once the CPU copied the pages, the device goes through the CPU's copy;
 * a migration to the device, where the pages already are, takes the copy
 * (moving nothing), and the device then works in place: no copy comes
 * back to the page cache.
 */
Test(attach_coherent, a_migration_takes_the_cpus_copy_and_the_device_then_works_in_place)
{
	struct mapped_file f = map_file("inplace", O_RDWR, PROT_READ | PROT_WRITE, 0);
	struct hmm_migrate r;
	struct hmm_device *dev;
	struct hmm_mirror *m;

	attach(0, &dev, &m);
	cr_assert_eq(cached_pages(f.p), 0, "the migration took the pages from the CPU");
	for (size_t i = 0; i < NPAGES; i++)
		cr_assert_eq(pattern_check(f.p + i * PAGE, PAGE, i * PAGE, 7), -1);
	cr_assert_eq(cached_pages(f.p), NPAGES, "the CPU's reads copied every page");
	expect_read_in_place(m, &f, LEN);
	put_words(m, f.p, 41);
	cr_assert_eq(cached_pages(f.p), NPAGES, "the device went through the CPU's copy");
	cr_assert_eq(hmm_file_migrate(f.fd, 0, 0, 0, &r), 0);
	cr_assert_eq(r.moved, 0);
	cr_assert_eq(r.skipped, NPAGES);
	cr_assert_eq(cached_pages(f.p), 0, "the migration took the CPU's copy");
	cr_assert_eq(word(m, f.p, 5), 41, "the device reads what it wrote through the CPU");
	put_words(m, f.p, 42);
	cr_assert_eq(word(m, f.p, NPAGES - 1), 42);
	cr_assert_eq(cached_pages(f.p), 0, "the device worked through the page cache");
	cr_assert_eq(pread_word(f.fd, 3), 42);
	cr_assert_eq(word(NULL, f.p, 9), 42);
	cr_assert_eq(on_device(f.fd, 0), NPAGES);
	detach(dev, m);
	unmap_file(&f);
}

struct writer {
	struct hmm_mirror *m; /* the device writes; NULL: the CPU does */
	unsigned char *p;
	uint64_t rounds;
	unsigned reads;       /* atomic: the reader's rounds so far */
	bool done;            /* atomic */
};

/* Each write waits for a round of the reader since the one before, so that
 * a fast writer (CPU stores) does not finish before the reader starts. */
static void *write_rounds(void *arg)
{
	struct writer *w = arg;
	unsigned seen = 0;

	for (uint64_t v = 1; v <= w->rounds; v++) {
		while (__atomic_load_n(&w->reads, __ATOMIC_ACQUIRE) == seen)
			sched_yield();
		seen = __atomic_load_n(&w->reads, __ATOMIC_ACQUIRE);
		put_words(w->m, w->p, v);
	}
	__atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * One side writes 1, 2, 3... into every page while the other reads: no
 * page ever reads older than it read before, and the last value is what
 * every reader ends with.  writer_is_device says which side writes.
 */
static void reads_never_go_back(bool writer_is_device)
{
	struct mapped_file f = map_file(writer_is_device ? "dw" : "cw", O_RDWR,
					PROT_READ | PROT_WRITE, 0);
	uint64_t last[NPAGES] = { 0 };
	struct hmm_device *dev;
	struct hmm_mirror *m;
	struct writer w;
	pthread_t t;

	attach(0, &dev, &m);
	put_words(m, f.p, 0);
	w = (struct writer){ writer_is_device ? m : NULL, f.p, 300, 0, false };
	cr_assert_eq(pthread_create(&t, NULL, write_rounds, &w), 0);
	while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE)) {
		for (size_t i = 0; i < NPAGES; i++) {
			uint64_t v = word(writer_is_device ? NULL : m, f.p, i);

			cr_assert_geq(v, last[i], "page %zu read %lu after %lu", i,
				      (unsigned long)v, (unsigned long)last[i]);
			cr_assert_leq(v, w.rounds);
			last[i] = v;
		}
		__atomic_add_fetch(&w.reads, 1, __ATOMIC_RELEASE);
	}
	pthread_join(t, NULL);
	for (size_t i = 0; i < NPAGES; i++) {
		cr_assert_eq(word(NULL, f.p, i), w.rounds, "the CPU ends with the last write");
		cr_assert_eq(word(m, f.p, i), w.rounds, "the device ends with the last write");
		cr_assert_eq(pread_word(f.fd, i), w.rounds, "pread ends with the last write");
	}
	cr_log_info("%u reads of every page during %lu writes", w.reads, (unsigned long)w.rounds);
	cr_assert_eq(on_device(f.fd, 0), NPAGES, "the pages stayed on the device");
	detach(dev, m);
	unmap_file(&f);
}

Test(attach_coherent, cpu_reads_racing_device_writes_never_go_back_and_end_with_the_last)
{
	reads_never_go_back(true);
}

Test(attach_coherent, device_reads_racing_cpu_stores_never_go_back_and_end_with_the_last)
{
	reads_never_go_back(false);
}
