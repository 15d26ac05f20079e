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

#ifdef __cplusplus
}
#endif

#endif /* HMM_H */
