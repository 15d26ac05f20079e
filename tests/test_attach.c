/* SPDX-License-Identifier: MIT */
/*
 * test_attach.c - a device of a real hmmfs mount, attached with
 * hmm_device_attach(): its mirror uses the pages of mapped files that lie
 * on it in place (no CPU fault brings them back), writes land in the file,
 * the daemon's moves invalidate the mirror first, other devices and the CPU
 * still bring pages back, read-only mappings stay read-only, kernels run
 * on the device memory, and a migration racing device reads never shows a
 * stale page.
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "mount.h"

#include <hmm.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

Test(attach, bad_arguments_and_what_an_attached_device_cannot_do)
{
	struct hmm_device *dev;
	struct hmm_device_stats st;
	void *page;
	char *anon;

	cr_assert_eq(hmm_device_attach(NULL, 0, &dev), -EINVAL);
	cr_assert_eq(hmm_device_attach(mnt.dir, 0, NULL), -EINVAL);
	cr_assert_eq(hmm_device_attach("/proc", 0, &dev), -ENOTTY);
	cr_assert_eq(hmm_device_attach(mnt.dir, 2, &dev), -ENODEV);
	cr_assert_eq(hmm_device_attach(mp("nothing/here"), 0, &dev), -ENOENT);
	cr_assert_eq(hmm_device_attach(mnt.dir, 0, &dev), 0);
	cr_assert_eq(hmm_device_stats(dev, &st), 0);
	cr_assert_eq(st.capacity, 16 << 20, "the daemon's device");
	cr_assert_eq(hmm_device_page_alloc(dev, &page), -EOPNOTSUPP);
	anon = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	anon[0] = 1;
	cr_assert_eq(hmm_migrate_to_device(dev, anon, PAGE, NULL), -EOPNOTSUPP);
	cr_assert_eq(anon[0], 1);
	munmap(anon, PAGE);
	cr_assert_eq(hmm_device_destroy(dev), 0);
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

Test(attach, another_user_is_refused)
{
	assert_nobody_gets(attach_fails, mnt.dir, EACCES);
}

Test(attach, a_process_killed_while_using_device_memory_hurts_nobody)
{
	struct mapped_file f = map_file("kill", O_RDWR, PROT_READ | PROT_WRITE, 0);
	int status;

	skip_under_tsan_if_children_start_threads();
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
