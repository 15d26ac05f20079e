/* SPDX-License-Identifier: MIT */
/* The library's version, so a program can check what it runs against. */
#include "config.h"
#include "hmm-internal.h"

#include <hmm.h>

HMM_EXPORT int hmm_version(void)
{
	return HMM_VERSION_NUMBER;
}

HMM_EXPORT const char *hmm_version_string(void)
{
	return PACKAGE_VERSION;
}
