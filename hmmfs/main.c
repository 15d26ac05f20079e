/* SPDX-License-Identifier: MIT */
/*
 * hmmfs: the daemon's entry point.  Parses the command line, sets up the
 * filesystem, mounts it and runs the libfuse session loop.
 *
 *   hmmfs [options] [SOURCE] MOUNTPOINT
 *
 * SOURCE is accepted (and shown as the filesystem name) so that mount(8)
 * and fstab work through mount.fuse3, which runs "hmmfs SOURCE MOUNTPOINT".
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>


struct options {
	char *host_mem;
	char *page_size;
	char *devices;
	char *device_mem;
	char *device_type;
	char *host_node;
	char *device_node;
	char *dma_engines;
	char *dma_bw;
	char *dma_latency;
	char *evict;
	char *attach;
	char *nr_inodes;
	char *mode;
	char *uid;
	char *gid;
	char *nonopt[2];  /* [SOURCE] MOUNTPOINT */
	int nnonopt;
	int too_many;
};

#define OPT(t, f) { t, offsetof(struct options, f), 0 }
static const struct fuse_opt hmmfs_opts[] = {
	OPT("host_mem=%s", host_mem),
	OPT("page_size=%s", page_size),
	OPT("devices=%s", devices),
	OPT("device_mem=%s", device_mem),
	OPT("device_type=%s", device_type),
	OPT("host_node=%s", host_node),
	OPT("device_node=%s", device_node),
	OPT("dma_engines=%s", dma_engines),
	OPT("dma_bw=%s", dma_bw),
	OPT("dma_latency=%s", dma_latency),
	OPT("evict=%s", evict),
	OPT("attach=%s", attach),
	OPT("nr_inodes=%s", nr_inodes),
	OPT("mode=%s", mode),
	OPT("uid=%s", uid),
	OPT("gid=%s", gid),
	FUSE_OPT_END
};

static const struct fuse_lowlevel_ops hmmfs_ops = {
	.lookup = hmmfs_ll_lookup,
	.forget = hmmfs_ll_forget,
	.forget_multi = hmmfs_ll_forget_multi,
	.getattr = hmmfs_ll_getattr,
	.setattr = hmmfs_ll_setattr,
	.readlink = hmmfs_ll_readlink,
	.mknod = hmmfs_ll_mknod,
	.mkdir = hmmfs_ll_mkdir,
	.unlink = hmmfs_ll_unlink,
	.rmdir = hmmfs_ll_rmdir,
	.symlink = hmmfs_ll_symlink,
	.rename = hmmfs_ll_rename,
	.link = hmmfs_ll_link,
	.open = hmmfs_ll_open,
	.read = hmmfs_ll_read,
	.write = hmmfs_ll_write,
	.release = hmmfs_ll_release,
	.fsync = hmmfs_ll_fsync,
	.readdir = hmmfs_ll_readdir,
	.statfs = hmmfs_ll_statfs,
	.setxattr = hmmfs_ll_setxattr,
	.getxattr = hmmfs_ll_getxattr,
	.listxattr = hmmfs_ll_listxattr,
	.removexattr = hmmfs_ll_removexattr,
	.create = hmmfs_ll_create,
	.fallocate = hmmfs_ll_fallocate,
	.lseek = hmmfs_ll_lseek,
	.copy_file_range = hmmfs_ll_copy_file_range,
	.ioctl = hmmfs_ll_ioctl,
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	if (key != FUSE_OPT_KEY_NONOPT)
		return 1; /* leave it for libfuse */
	if (o->nnonopt == 2) {
		o->too_many = 1;
		return 0;
	}
	o->nonopt[o->nnonopt] = strdup(arg);
	if (!o->nonopt[o->nnonopt])
		return -1;
	o->nnonopt++;
	return 0;
}

static void usage(const char *prog)
{
	printf("Usage: %s [options] [source] mountpoint\n"
	       "\n"
	       "Mount an hmmfs filesystem: files kept in memory, in page-sized pieces.\n"
	       "\n"
	       "hmmfs options (-o name=value):\n"
	       "    -o host_mem=SIZE      file data the mount may hold (default: half of RAM)\n"
	       "    -o page_size=SIZE     storage granularity, a power-of-two multiple of\n"
	       "                          the system page size (default: the system page)\n"
	       "    -o nr_inodes=N        most inodes (default: host_mem / 4096, at least 1024)\n"
	       "    -o mode=OCTAL         permissions of the root directory (default: 1777)\n"
	       "    -o uid=N,gid=N        owner of the root directory (default: the caller)\n"
	       "    -o host_node=N        NUMA node of host RAM (default: no placement)\n"
	       "\n"
	       "Simulated devices:\n"
	       "    -o devices=N          number of devices, 0 to %d (default: 0)\n"
	       "    -o device_mem=SIZE    memory of each device (default: 1G)\n"
	       "    -o device_type=T[:T...]  private or coherent, one for all or one per\n"
	       "                          device (default: private)\n"
	       "    -o device_node=N[:N...]  NUMA node of device memory, one or one per device\n"
	       "    -o dma_engines=N      DMA engines per device, 1 to 64 (default: 1)\n"
	       "    -o dma_bw=RATE        bytes per second per engine (default: unthrottled)\n"
	       "    -o dma_latency=USEC   added to every DMA transfer (default: 0)\n"
	       "    -o evict=lru|none     when a device is full: move its least recently used\n"
	       "                          pages to host RAM, or fail with ENOSPC (default: lru)\n"
	       "    -o attach=owner|all   who may attach to the devices (libhmm's\n"
	       "                          hmm_device_attach): the mount's owner and root, or\n"
	       "                          anyone who can open its files (default: owner)\n"
	       "SIZE and RATE are numbers with an optional K, M, G or T suffix (powers of 1024).\n"
	       "Permission checks are always done by the kernel (default_permissions).\n"
	       "\n", prog, HMMFS_MAX_DEVICES);
	printf("General options:\n");
	fuse_cmdline_help();
	printf("\nFUSE options:\n");
	fuse_lowlevel_help();
}

/* One line on stderr, as every command-line error gets. */
static int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "hmmfs: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static int parse_size_opt(const char *name, const char *value, uint64_t *out)
{
	int err = hmm__parse_size(value, out);

	if (err == -ERANGE)
		return fail("%s=%s is too large", name, value);
	if (err)
		return fail("invalid %s value '%s': expected a size such as 512M or 4G", name, value);
	return 0;
}

static int parse_uint_opt(const char *name, const char *value, int base,
			  unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(value, &end, base);
	if (!*value || *end || *value == '-' || errno || *out > max)
		return fail("invalid %s value '%s'", name, value);
	return 0;
}

/*
 * Split a ':'-separated list of values, one for every device or one per
 * device, into per-device strings.  Return: 0 or -1 after a message.
 */
static int split_per_device(const char *name, const char *value, unsigned ndevices,
			    char *out[HMMFS_MAX_DEVICES], char *buf, size_t bufsize)
{
	unsigned n = 0;
	char *save, *tok;

	if (strlen(value) >= bufsize)
		return fail("%s=%s is too long", name, value);
	strcpy(buf, value);
	for (tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		if (n == HMMFS_MAX_DEVICES)
			return fail("%s=%s has more values than devices (%u)", name, value, ndevices);
		out[n++] = tok;
	}
	if (n == 0 || value[0] == ':' || value[strlen(value) - 1] == ':' || strstr(value, "::"))
		return fail("invalid %s value '%s'", name, value);
	if (n == 1) {
		for (unsigned i = 1; i < ndevices; i++)
			out[i] = out[0];
	} else if (n != ndevices) {
		return fail("%s=%s gives %u values for %u devices: give one, or one per device",
			    name, value, n, ndevices);
	}
	return 0;
}

static int parse_node_opt(const char *name, const char *value, int *node)
{
	unsigned long n;

	if (parse_uint_opt(name, value, 10, 4095, &n))
		return -1;
	if (!hmm__numa_node_exists((int)n))
		return fail("%s=%s: no such NUMA node on this machine", name, value);
	*node = (int)n;
	return 0;
}

/* Parse the device options into one configuration per device. */
static int parse_devices(const struct options *o, size_t page_size,
			 struct hmm__device_config cfg[HMMFS_MAX_DEVICES], unsigned *ndevices)
{
	const char *device_opts[] = { o->device_mem, o->device_type, o->device_node,
				      o->dma_engines, o->dma_bw, o->dma_latency, o->evict,
				      o->attach };
	static const char *const device_opt_names[] = { "device_mem", "device_type",
		"device_node", "dma_engines", "dma_bw", "dma_latency", "evict", "attach" };
	char *per[HMMFS_MAX_DEVICES], buf[1024];
	unsigned long n = 0, engines = 1, latency_us = 0;
	uint64_t mem = 1ULL << 30, bw = 0;

	if (o->devices && parse_uint_opt("devices", o->devices, 10, HMMFS_MAX_DEVICES, &n))
		return -1;
	*ndevices = (unsigned)n;
	if (n == 0) {
		for (size_t i = 0; i < sizeof(device_opts) / sizeof(device_opts[0]); i++)
			if (device_opts[i])
				return fail("%s is given but there are no devices (add devices=N)",
					    device_opt_names[i]);
		return 0;
	}
	if (o->device_mem && parse_size_opt("device_mem", o->device_mem, &mem))
		return -1;
	if (mem < page_size)
		return fail("device_mem=%s is smaller than one page (%zu bytes)",
			    o->device_mem, page_size);
	if (o->dma_engines && parse_uint_opt("dma_engines", o->dma_engines, 10, 64, &engines))
		return -1;
	if (engines == 0)
		return fail("dma_engines must be at least 1");
	if (o->dma_bw) {
		if (parse_size_opt("dma_bw", o->dma_bw, &bw))
			return -1;
		if (bw == 0)
			return fail("dma_bw must be more than 0 bytes per second (leave it out for no limit)");
	}
	if (o->dma_latency &&
	    parse_uint_opt("dma_latency", o->dma_latency, 10, 60UL * 1000 * 1000, &latency_us))
		return -1;
	for (unsigned i = 0; i < n; i++) {
		cfg[i].type = HMM__DEVICE_PRIVATE;
		cfg[i].capacity = mem;
		cfg[i].page_size = page_size;
		cfg[i].numa_node = -1;
		cfg[i].dma_engines = (unsigned)engines;
		cfg[i].dma_bw = bw;
		cfg[i].dma_latency_ns = (uint64_t)latency_us * 1000;
	}
	if (o->device_type) {
		if (split_per_device("device_type", o->device_type, (unsigned)n, per, buf, sizeof(buf)))
			return -1;
		for (unsigned i = 0; i < n; i++) {
			if (!strcmp(per[i], "private"))
				cfg[i].type = HMM__DEVICE_PRIVATE;
			else if (!strcmp(per[i], "coherent"))
				cfg[i].type = HMM__DEVICE_COHERENT;
			else
				return fail("invalid device_type '%s': expected private or coherent", per[i]);
		}
	}
	if (o->device_node) {
		if (split_per_device("device_node", o->device_node, (unsigned)n, per, buf, sizeof(buf)))
			return -1;
		for (unsigned i = 0; i < n; i++)
			if (parse_node_opt("device_node", per[i], &cfg[i].numa_node))
				return -1;
	}
	if (o->evict && strcmp(o->evict, "lru") && strcmp(o->evict, "none"))
		return fail("invalid evict value '%s': expected lru or none", o->evict);
	if (hmmfs_session_set_policy(o->attach))
		return fail("invalid attach value '%s': expected owner or all", o->attach);
	return 0;
}

/* The devices asked for, checked by setup_fs() and made by start_devices(). */
static struct hmm__device_config device_cfg[HMMFS_MAX_DEVICES];
static unsigned ndevice_cfg;

/*
 * Create the devices and start the invalidator and migration threads.  Called once mounted
 * and daemonized: the devices' DMA engines are threads, and fork() keeps
 * only the thread that calls it.  Their options were checked before
 * mounting, so only a lack of memory or threads can fail here.
 */
static int start_devices(void)
{
	struct rlimit nofile;
	int err;

	/* A file's pages on a device live in a memfd of its own, one
	 * descriptor per file and device (pool.c, owned memory): allow as
	 * many as the hard limit does.  Past it, device memory is anonymous. */
	if (ndevice_cfg && getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
	    nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}

	for (unsigned i = 0; i < ndevice_cfg; i++) {
		err = hmm__device_create(i, &device_cfg[i], &hmmfs.devices[i]);
		if (err)
			return fail("cannot set up device %u: %s", i, strerror(-err));
		hmmfs.ndevices = i + 1;
	}
	hmmfs.mem.ndevices = hmmfs.ndevices;
	err = hmmfs_invalidator_start();
	if (err)
		return fail("cannot start the invalidator thread: %s", strerror(-err));
	err = hmmfs_migrate_start();
	if (err)
		return fail("cannot start the migration thread: %s", strerror(-err));
	/* Also without devices: processes observe the files they mirror. */
	err = hmmfs_session_start();
	if (err)
		return fail("cannot open the control socket: %s", strerror(-err));
	return 0;
}

/* Check every hmmfs option and set up the filesystem; nothing is mounted yet. */
static int setup_fs(const struct options *o)
{
	long sys_page = sysconf(_SC_PAGESIZE);
	uint64_t host_mem, page_size = (uint64_t)sys_page, nr_inodes;
	unsigned long mode = 01777, uid = getuid(), gid = getgid();
	struct hmm__device_config cfg[HMMFS_MAX_DEVICES];
	unsigned ndevices = 0;
	int host_node = -1;
	int err;

	host_mem = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sys_page / 2;
	if (o->page_size) {
		if (parse_size_opt("page_size", o->page_size, &page_size))
			return -1;
		if (page_size < (uint64_t)sys_page || (page_size & (page_size - 1)) ||
		    page_size > (1ULL << 30)) {
			return fail("invalid page_size '%s': must be a power of two from %ld bytes to 1G",
				    o->page_size, sys_page);
		}
	}
	if (o->host_mem && parse_size_opt("host_mem", o->host_mem, &host_mem))
		return -1;
	if (host_mem < page_size)
		return fail("host_mem=%s is smaller than one page (%" PRIu64 " bytes)",
			    o->host_mem ? o->host_mem : "", page_size);
	nr_inodes = host_mem / 4096 > 1024 ? host_mem / 4096 : 1024;
	if (o->nr_inodes) {
		if (parse_size_opt("nr_inodes", o->nr_inodes, &nr_inodes))
			return -1;
		if (nr_inodes == 0)
			return fail("nr_inodes must be at least 1 (the root directory)");
	}
	if (o->host_node && parse_node_opt("host_node", o->host_node, &host_node))
		return -1;
	if (parse_devices(o, (size_t)page_size, cfg, &ndevices))
		return -1;
	if (o->mode && parse_uint_opt("mode", o->mode, 8, 07777, &mode))
		return -1;
	if (o->uid && parse_uint_opt("uid", o->uid, 10, UINT32_MAX - 1, &uid))
		return -1;
	if (o->gid && parse_uint_opt("gid", o->gid, 10, UINT32_MAX - 1, &gid))
		return -1;

	hmmfs.page_size = (size_t)page_size;
	hmmfs.page_shift = (unsigned)__builtin_ctzll(page_size);
	hmmfs.max_inodes = nr_inodes;
	/* The kernel sees every change to names and attributes (only this
	 * daemon serves the mount), so its caches can live long. */
	hmmfs.timeout = 86400.0;
	hmmfs.zero_page = calloc(1, hmmfs.page_size);
	if (!hmmfs.zero_page)
		return fail("out of memory");
	hmmfs.host_node = host_node;
	hmmfs.evict_lru = !o->evict || !strcmp(o->evict, "lru");
	err = hmm__pool_init(&hmmfs.host, hmmfs.page_size, host_mem, host_node);
	if (err)
		return fail("cannot set up host memory: %s", strerror(-err));
	/* The devices are created by start_devices(), after daemonizing. */
	memcpy(device_cfg, cfg, sizeof(cfg[0]) * ndevices);
	ndevice_cfg = ndevices;
	hmmfs.mem.host = &hmmfs.host;
	hmmfs.mem.devices = hmmfs.devices;
	hmmfs.mem.page_size = hmmfs.page_size;
	hmmfs.mem.owned = hmmfs_pages_devmem;
	pthread_rwlock_init(&hmmfs.ns_lock, NULL);
	pthread_mutex_init(&hmmfs.ref_lock, NULL);
	err = hmmfs_inode_new(S_IFDIR | (mode_t)mode, (uid_t)uid, (gid_t)gid, 0, &hmmfs.root);
	if (!err)
		err = hmmfs_dir_init(hmmfs.root, NULL);
	if (err)
		return fail("cannot create the root directory: %s", strerror(-err));
	hmmfs.root->nlink = 2;
	return 0;
}

static void teardown_fs(void)
{
	hmmfs_destroy_all();
	for (unsigned i = 0; i < hmmfs.ndevices; i++)
		hmm__device_destroy(hmmfs.devices[i]);
	hmmfs.ndevices = 0;
	if (hmmfs.page_size)
		hmm__pool_destroy(&hmmfs.host);
	free(hmmfs.zero_page);
}

static void hmmfs_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Size or mtime changes must not flush the page cache: other processes
	 * may have the pages mapped.  hmmfs invalidates explicitly. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* libfuse asks for O_TRUNC inside OPEN by default; without it the
	 * kernel truncates through SETATTR, the one path that does it (and
	 * updates mtime and ctime) for every caller. */
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	conn->time_gran = 1;
}


int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_lowlevel_ops ops = hmmfs_ops;
	struct fuse_cmdline_opts cmd = { 0 };
	struct options o = { 0 };
	struct fuse_session *se = NULL;
	char fsname[256];
	const char *mountpoint;
	int ret = 1;

	ops.init = hmmfs_init;
	if (fuse_opt_parse(&args, &o, hmmfs_opts, opt_proc) != 0) {
		fprintf(stderr, "hmmfs: invalid arguments; try 'hmmfs --help'\n");
		goto out;
	}
	if (fuse_parse_cmdline(&args, &cmd) != 0)
		goto out; /* libfuse printed the reason */
	if (cmd.show_help) {
		usage(program_invocation_short_name);
		ret = 0;
		goto out;
	}
	if (cmd.show_version) {
		printf("hmmfs %s\n", PACKAGE_VERSION);
		/* libfuse runs fusermount3, which writes to the same stdout. */
		fflush(stdout);
		fuse_lowlevel_version();
		ret = 0;
		goto out;
	}
	if (o.too_many) {
		fprintf(stderr, "hmmfs: too many arguments; usage: hmmfs [options] [source] mountpoint\n");
		goto out;
	}
	if (o.nnonopt == 0) {
		fprintf(stderr, "hmmfs: no mount point given; try 'hmmfs --help'\n");
		goto out;
	}
	mountpoint = o.nonopt[o.nnonopt - 1];
	if (setup_fs(&o) != 0)
		goto out;

	snprintf(fsname, sizeof(fsname), "-ofsname=%s,subtype=hmmfs,default_permissions",
		 o.nnonopt == 2 && !strchr(o.nonopt[0], ',') ? o.nonopt[0] : "hmmfs");
	/* Inserted first so that the user's own fsname= or subtype= win. */
	if (fuse_opt_insert_arg(&args, 1, fsname) != 0)
		goto out;
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		goto out; /* libfuse printed the reason (an unknown option) */
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	/* Resolved before mounting: afterwards the walk would ask this
	 * daemon, which does not serve requests yet.  The mount lands on the
	 * target of a symbolic link, as this does. */
	hmmfs.mountpoint = realpath(mountpoint, NULL);
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	fuse_daemonize(cmd.foreground);
	hmmfs.se = se;
	if (start_devices() != 0)
		goto out_unmount;
	if (cmd.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *config = fuse_loop_cfg_create();

		if (!config) {
			ret = 1;
		} else {
			fuse_loop_cfg_set_clone_fd(config, (unsigned)cmd.clone_fd);
			if (cmd.max_threads)
				fuse_loop_cfg_set_max_threads(config, cmd.max_threads);
			ret = fuse_session_loop_mt(se, config);
			fuse_loop_cfg_destroy(config);
		}
	}
	ret = ret ? 1 : 0;
	/*
	 * Shutting down: queued migrations are refused, and the one in
	 * progress must reply before the session goes.  After fusermount3 -u
	 * the kernel has aborted the connection, so a migration waiting in
	 * notify_inval_inode returns at once.  (After SIGINT with files still
	 * open, a migration that waits for a dirty page's write-back can only
	 * end when the mount is aborted.)
	 */
	hmmfs_migrate_refuse();
out_unmount:
	fuse_session_unmount(se);
	hmmfs_session_stop();
	hmmfs_migrate_stop();
	hmmfs_invalidator_stop();
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out:
	teardown_fs();
	fuse_opt_free_args(&args);
	free(cmd.mountpoint);
	free(hmmfs.mountpoint);
	free(o.host_mem);
	free(o.page_size);
	free(o.devices);
	free(o.device_mem);
	free(o.device_type);
	free(o.host_node);
	free(o.device_node);
	free(o.dma_engines);
	free(o.dma_bw);
	free(o.dma_latency);
	free(o.evict);
	free(o.attach);
	free(o.nr_inodes);
	free(o.mode);
	free(o.uid);
	free(o.gid);
	for (int i = 0; i < o.nnonopt; i++)
		free(o.nonopt[i]);
	return ret;
}
