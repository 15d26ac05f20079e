/* SPDX-License-Identifier: MIT */
/*
 * libhmm's wrappers of the hmmfs ioctls: migration, residency and device
 * information for files of an hmmfs mount.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <hmm.h>

static int call(int fd, unsigned long request, void *arg)
{
	return ioctl(fd, request, arg) < 0 ? -errno : 0;
}

HMM_EXPORT int hmm_file_migrate(int fd, uint64_t offset, uint64_t length, int dest,
				struct hmm_migrate *result)
{
	struct hmm_migrate m;
	int err;

	if (dest < HMM_LOC_HOST)
		return -EINVAL;
	memset(&m, 0, sizeof(m));
	m.offset = offset;
	m.length = length;
	m.dest = dest;
	err = call(fd, HMM_IOC_MIGRATE, &m);
	if (!err && result)
		*result = m;
	return err;
}

HMM_EXPORT int hmm_file_residency(int fd, uint64_t offset, struct hmm_residency *r)
{
	memset(r, 0, sizeof(*r));
	r->offset = offset;
	return call(fd, HMM_IOC_RESIDENCY, r);
}

HMM_EXPORT int hmm_device_info(int fd, unsigned int index, struct hmm_device_info *info)
{
	memset(info, 0, sizeof(*info));
	info->index = index;
	return call(fd, HMM_IOC_DEVICE_INFO, info);
}

HMM_EXPORT int hmm_file_stat(int fd, struct hmm_file_stat *st)
{
	memset(st, 0, sizeof(*st));
	return call(fd, HMM_IOC_FILE_STAT, st);
}
