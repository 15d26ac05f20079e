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
#include <unistd.h>


struct options {
	char *host_mem;
	char *page_size;
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
	       "SIZE is a number of bytes with an optional K, M, G or T suffix (powers of 1024).\n"
	       "Permission checks are always done by the kernel (default_permissions).\n"
	       "\n", prog);
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

/* Check every hmmfs option and set up the filesystem; nothing is mounted yet. */
static int setup_fs(const struct options *o)
{
	long sys_page = sysconf(_SC_PAGESIZE);
	uint64_t host_mem, page_size = (uint64_t)sys_page, nr_inodes;
	unsigned long mode = 01777, uid = getuid(), gid = getgid();
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
	err = hmm__pool_init(&hmmfs.host, hmmfs.page_size, host_mem, -1);
	if (err)
		return fail("cannot set up host memory: %s", strerror(-err));
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

static void hmmfs_destroy(void *userdata)
{
	hmmfs_destroy_all();
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
	ops.destroy = hmmfs_destroy;
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
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	fuse_daemonize(cmd.foreground);
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
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out:
	teardown_fs();
	fuse_opt_free_args(&args);
	free(cmd.mountpoint);
	free(o.host_mem);
	free(o.page_size);
	free(o.nr_inodes);
	free(o.mode);
	free(o.uid);
	free(o.gid);
	for (int i = 0; i < o.nnonopt; i++)
		free(o.nonopt[i]);
	return ret;
}
