# libhmm: the HMM core.  The internals are a convenience library that both the
# public shared library and the hmmfs daemon link, so there is one copy of
# every mechanism; the shared library exports only what hmm.h declares.
noinst_LTLIBRARIES += libhmm/libhmm-core.la
libhmm_libhmm_core_la_SOURCES = \
	libhmm/hmm-internal.h \
	libhmm/alloc.c \
	libhmm/radix.c \
	libhmm/pool.c \
	libhmm/dma.c \
	libhmm/device.c \
	libhmm/residency.c \
	libhmm/pagetable.h \
	libhmm/pt_radix.c \
	libhmm/tlb.c \
	libhmm/notifier.c \
	libhmm/range.c \
	libhmm/mirror.h \
	libhmm/mirror.c \
	libhmm/fault.c \
	libhmm/policy.c \
	libhmm/launch.c \
	libhmm/migrate.c \
	libhmm/cpufault.c \
	libhmm/client.c \
	libhmm/attach.c
libhmm_libhmm_core_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden
libhmm_libhmm_core_la_LIBADD = $(NUMA_LIBS)

lib_LTLIBRARIES += libhmm/libhmm.la
include_HEADERS = libhmm/include/hmm.h libhmm/include/hmm_dmirror.h
# invalidate.c interposes libc calls and uffd.c turns userfaultfd events
# into invalidations: in the shared library only, never in the core that
# the hmmfs daemon links.
libhmm_libhmm_la_SOURCES = libhmm/version.c libhmm/hmmfs_ioctl.c libhmm/invalidate.c \
	libhmm/interposed.h \
	libhmm/uffd.c
libhmm_libhmm_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden
libhmm_libhmm_la_LIBADD = libhmm/libhmm-core.la
libhmm_libhmm_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(LIBHMM_LT_VERSION) \
	-Wl,--version-script=$(top_srcdir)/libhmm/libhmm.sym
EXTRA_libhmm_libhmm_la_DEPENDENCIES = libhmm/libhmm.sym
EXTRA_DIST += libhmm/libhmm.sym libhmm/libhmm.pc.in
pkgconfig_DATA = libhmm/libhmm.pc

# libhmm_dmirror.so: the kernel's HMM test driver ("dmirror") served by
# libhmm's devices, for programs written against its ioctls
# (LD_PRELOAD=libhmm_dmirror.so; libhmm_dmirror(7)).  A module: no version,
# no symbol other than the interposed calls.
lib_LTLIBRARIES += libhmm/libhmm_dmirror.la
libhmm_libhmm_dmirror_la_SOURCES = libhmm/dmirror.c libhmm/interposed.h
libhmm_libhmm_dmirror_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden
libhmm_libhmm_dmirror_la_LIBADD = libhmm/libhmm.la
libhmm_libhmm_dmirror_la_LDFLAGS = $(AM_LDFLAGS) -module -avoid-version -shared
