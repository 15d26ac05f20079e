# Benchmarks: `make bench`.
#
# bench measures hmmfs against a tmpfs and against fuse_min, the smallest
# reasonable FUSE filesystem (the ceiling for any FUSE daemon), in one run,
# and prints the ratios.  run.sh mounts the three and cleans up; it needs
# root.  Neither program is installed.  BENCH_FLAGS passes options to
# bench (e.g. BENCH_FLAGS='-v -r 5'); see run.sh for its environment.
# bench_device then prints the device-memory table (issue 3) on extra hmmfs
# mounts with devices; BENCH_DEVICE_FLAGS passes options to it.
# bench_kernel prints the device-kernel table (issue 4); it needs no mount.
# bench_anon prints the table of anonymous memory migration (issue 4): the
# migrations against memcpy, CPU faults against a bare userfaultfd.
# bench_mirror prints the table of mirroring (issue 4): device first touch
# against the CPU's, a range snapshot against /proc/self/pagemap, munmap of
# mirrored memory against unmirrored, the matmul kernel against CPU threads.
noinst_PROGRAMS += tests/bench/fuse_min tests/bench/bench tests/bench/bench_device \
	tests/bench/bench_kernel tests/bench/bench_anon tests/bench/bench_mirror

tests_bench_fuse_min_SOURCES = tests/bench/fuse_min.c
tests_bench_fuse_min_CFLAGS = $(AM_CFLAGS) $(FUSE_CFLAGS)
tests_bench_fuse_min_LDADD = $(FUSE_LIBS)

tests_bench_bench_SOURCES = tests/bench/bench.c tests/bench/bench_common.c \
	tests/bench/bench_common.h

tests_bench_bench_device_SOURCES = tests/bench/bench_device.c tests/bench/bench_common.c \
	tests/bench/bench_common.h
tests_bench_bench_device_LDADD = libhmm/libhmm.la

tests_bench_bench_kernel_SOURCES = tests/bench/bench_kernel.c tests/bench/bench_common.c \
	tests/bench/bench_common.h tests/bench/bench_hmm.c tests/bench/bench_hmm.h
tests_bench_bench_kernel_LDADD = libhmm/libhmm.la
tests_bench_bench_kernel_LDFLAGS = $(AM_LDFLAGS) -no-install

tests_bench_bench_anon_SOURCES = tests/bench/bench_anon.c tests/bench/bench_common.c \
	tests/bench/bench_common.h tests/bench/bench_hmm.c tests/bench/bench_hmm.h
tests_bench_bench_anon_LDADD = libhmm/libhmm.la
tests_bench_bench_anon_LDFLAGS = $(AM_LDFLAGS) -no-install

tests_bench_bench_mirror_SOURCES = tests/bench/bench_mirror.c tests/bench/bench_common.c examples/matmul_kernel.h \
	tests/bench/bench_common.h tests/bench/bench_hmm.c tests/bench/bench_hmm.h
tests_bench_bench_mirror_LDADD = libhmm/libhmm.la
tests_bench_bench_mirror_LDFLAGS = $(AM_LDFLAGS) -no-install

EXTRA_DIST += tests/bench/run.sh

.PHONY: bench
bench: hmmfs/hmmfs$(EXEEXT) tests/bench/fuse_min$(EXEEXT) tests/bench/bench$(EXEEXT) \
		tests/bench/bench_device$(EXEEXT) tests/bench/bench_kernel$(EXEEXT) \
		tests/bench/bench_anon$(EXEEXT) tests/bench/bench_mirror$(EXEEXT)
	BENCH_DEVICE_BIN=$(abs_top_builddir)/tests/bench/bench_device$(EXEEXT) \
	BENCH_DEVICE_FLAGS='$(BENCH_DEVICE_FLAGS)' \
	$(SHELL) $(top_srcdir)/tests/bench/run.sh \
		$(abs_top_builddir)/hmmfs/hmmfs$(EXEEXT) \
		$(abs_top_builddir)/tests/bench/fuse_min$(EXEEXT) \
		$(abs_top_builddir)/tests/bench/bench$(EXEEXT) $(BENCH_FLAGS)
	tests/bench/bench_kernel$(EXEEXT) $(BENCH_KERNEL_FLAGS)
	tests/bench/bench_anon$(EXEEXT) $(BENCH_ANON_FLAGS)
	tests/bench/bench_mirror$(EXEEXT) $(BENCH_MIRROR_FLAGS)
