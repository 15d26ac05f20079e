/* SPDX-License-Identifier: MIT */
/* dmirror_client.c - see dmirror_client.h. */
#define _GNU_SOURCE
#include "dmirror_client.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>

#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_ARGS 256

char **shim_own_argv(void)
{
	static char args[1 << 16];
	static char *argv[MAX_ARGS];
	FILE *f = fopen("/proc/self/cmdline", "re");
	size_t n, argc = 0;

	if (!f)
		abort();
	n = fread(args, 1, sizeof(args) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n && argc < MAX_ARGS - 1; i += strlen(&args[i]) + 1)
		argv[argc++] = &args[i];
	argv[argc] = NULL;
	return argv;
}

/* The path of ASan's or TSan's runtime, followed by a space, into arg. */
static int find_runtime(struct dl_phdr_info *info, size_t size, void *arg)
{
	const char *name = info->dlpi_name;

	(void)size;
	if (name && (strstr(name, "/libasan.so") || strstr(name, "/libtsan.so"))) {
		snprintf(arg, 512, "%s ", name);
		return 1;
	}
	return 0;
}

void shim_exec(char **argv, const char *shim)
{
	char preload[1024], runtime[512] = "";

	dl_iterate_phdr(find_runtime, runtime);
	snprintf(preload, sizeof(preload), "%s%s", runtime, shim);
	setenv("LD_PRELOAD", preload, 1);
	setenv("HMM_DMIRROR_TEST_SHIMMED", "1", 1);
	execv("/proc/self/exe", argv);
	fprintf(stderr, "%s: exec under %s: %m\n", argv[0] ? argv[0] : "test", shim);
}

int dmirror_open(unsigned n)
{
	char path[32];
	int fd;

	snprintf(path, sizeof(path), "/dev/hmm_dmirror%u", n);
	fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	return fd;
}

int dmirror_cmd(int fd, unsigned long request, void *addr, void *ptr, uint64_t npages,
		struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd c = { .addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr,
				     .npages = npages, .cpages = 777, .faults = 777 };
	int rc;

	do {
		rc = ioctl(fd, request, &c);
	} while (rc && errno == EINTR);
	if (rc)
		return -errno;
	if (out)
		*out = c;
	return 0;
}
