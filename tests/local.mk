# The test suite: Criterion programs that mount a real hmmfs, one per
# concept, plus scripts that run fio and stress-ng against a live mount.
# Criterion reports TAP; shell scripts use the plain exit-code driver.

TEST_EXTENSIONS = .sh
LOG_DRIVER = env AM_TAP_AWK='$(AWK)' $(SHELL) $(top_srcdir)/build-aux/tap-driver.sh
LOG_COMPILER = $(top_srcdir)/tests/criterion-tap
SH_LOG_COMPILER = $(SHELL)
AM_TESTS_ENVIRONMENT = \
	HMMFS_BIN="$${HMMFS_BIN:-$(abs_top_builddir)/hmmfs/hmmfs}"; export HMMFS_BIN; \
	HMMFS_SRCDIR='$(abs_top_srcdir)'; export HMMFS_SRCDIR; \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1; export ASAN_OPTIONS; \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; export UBSAN_OPTIONS; \
	TSAN_OPTIONS="$${TSAN_OPTIONS:-halt_on_error=1 exitcode=66 die_after_fork=0 symbolize=0}"; \
	export TSAN_OPTIONS;
EXTRA_DIST += tests/criterion-tap tests/lib.sh

if HAVE_CRITERION
check_LTLIBRARIES = tests/libfixture.la
tests_libfixture_la_SOURCES = tests/mount.c tests/mount.h tests/helpers.c tests/helpers.h
tests_libfixture_la_CFLAGS = $(AM_CFLAGS) $(CRITERION_CFLAGS) \
	-DHMMFS_BIN='"$(abs_top_builddir)/hmmfs/hmmfs"'

CRITERION_TESTS = \
	tests/test_dir \
	tests/test_attr \
	tests/test_xattr \
	tests/test_file \
	tests/test_mmap \
	tests/test_capacity \
	tests/test_options \
	tests/test_dma \
	tests/test_core \
	tests/test_pagetable \
	tests/test_notifier \
	tests/test_range \
	tests/test_invalidate \
	tests/test_uffd \
	tests/test_mirror \
	tests/test_launch \
	tests/test_migrate \
	tests/test_anon_migrate \
	tests/test_conformance_access \
	tests/test_conformance_migrate \
	tests/test_conformance_dummy \
	tests/test_hmmctl \
	tests/test_session \
	tests/test_attach \
	tests/test_conformance_hmmfs
# test_concurrency's child processes start threads; ThreadSanitizer does not
# support that after a fork in a threaded process (Criterion's test process
# always is), so the TSan build leaves it out (other such tests skip
# themselves: skip_under_sanitizers_if_children_start_threads).  .ci/check --tsan
# runs the normal build's test_concurrency and test_migrate against the TSan
# daemon instead.
check_PROGRAMS += $(CRITERION_TESTS) tests/test_concurrency tests/test_dmirror \
	tests/test_dmirror_hmmfs
TESTS += $(CRITERION_TESTS) tests/test_dmirror tests/test_dmirror_hmmfs
if !TSAN
TESTS += tests/test_concurrency
endif
# Every test program: tsan_support.c lets Criterion start under TSan.
# TSan reports are not symbolized (TSAN_OPTIONS above): its symbolizer maps
# and unmaps through libhmm.so's interposed munmap while it holds its own
# locks, and would deadlock.  addr2line -e MODULE OFFSET reads a frame.
TEST_COMMON_SOURCES = tests/tsan_support.c
TESTS_CFLAGS = $(AM_CFLAGS) $(CRITERION_CFLAGS) -I$(top_srcdir)/tests
TESTS_LDADD = tests/libfixture.la $(CRITERION_LIBS)

tests_test_dir_SOURCES = tests/test_dir.c $(TEST_COMMON_SOURCES)
tests_test_dir_CFLAGS = $(TESTS_CFLAGS)
tests_test_dir_LDADD = $(TESTS_LDADD)
tests_test_attr_SOURCES = tests/test_attr.c $(TEST_COMMON_SOURCES)
tests_test_attr_CFLAGS = $(TESTS_CFLAGS)
tests_test_attr_LDADD = $(TESTS_LDADD)
tests_test_xattr_SOURCES = tests/test_xattr.c $(TEST_COMMON_SOURCES)
tests_test_xattr_CFLAGS = $(TESTS_CFLAGS)
tests_test_xattr_LDADD = $(TESTS_LDADD)
tests_test_file_SOURCES = tests/test_file.c $(TEST_COMMON_SOURCES)
tests_test_file_CFLAGS = $(TESTS_CFLAGS)
tests_test_file_LDADD = $(TESTS_LDADD)
tests_test_mmap_SOURCES = tests/test_mmap.c $(TEST_COMMON_SOURCES)
tests_test_mmap_CFLAGS = $(TESTS_CFLAGS)
tests_test_mmap_LDADD = $(TESTS_LDADD)
tests_test_capacity_SOURCES = tests/test_capacity.c $(TEST_COMMON_SOURCES)
tests_test_capacity_CFLAGS = $(TESTS_CFLAGS)
tests_test_capacity_LDADD = $(TESTS_LDADD)
tests_test_concurrency_SOURCES = tests/test_concurrency.c tests/rng.h $(TEST_COMMON_SOURCES)
tests_test_concurrency_CFLAGS = $(TESTS_CFLAGS)
tests_test_concurrency_LDADD = $(TESTS_LDADD)
tests_test_options_SOURCES = tests/test_options.c $(TEST_COMMON_SOURCES)
tests_test_options_CFLAGS = $(TESTS_CFLAGS)
tests_test_options_LDADD = $(TESTS_LDADD)
# Programs that link the shared libhmm are linked -no-install: without a
# libtool wrapper script, Criterion re-executes the real binary, and the
# parameters of a ParameterizedTest keep their addresses.
tests_test_migrate_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_hmmctl_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_invalidate_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_uffd_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_mirror_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_launch_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_anon_migrate_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_conformance_access_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_conformance_migrate_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_conformance_dummy_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_attach_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_conformance_hmmfs_LDFLAGS = $(AM_LDFLAGS) -no-install
# test_dmirror knows only the dmirror ioctls: it runs itself again under
# LD_PRELOAD=libhmm_dmirror.so, which it finds here.
tests_test_dmirror_SOURCES = tests/test_dmirror.c tests/dmirror_client.c tests/dmirror_client.h \
	$(TEST_COMMON_SOURCES)
tests_test_dmirror_CFLAGS = $(TESTS_CFLAGS) \
	-DDMIRROR_SHIM='"$(abs_top_builddir)/libhmm/.libs/libhmm_dmirror.so"'
tests_test_dmirror_LDADD = $(TESTS_LDADD)
tests_test_dmirror_LDFLAGS = $(AM_LDFLAGS) -no-install
# test_dmirror_hmmfs too, with the devices of a mount it makes (and hmmctl).
tests_test_dmirror_hmmfs_SOURCES = tests/test_dmirror_hmmfs.c tests/dmirror_client.c \
	tests/dmirror_client.h $(TEST_COMMON_SOURCES)
tests_test_dmirror_hmmfs_CFLAGS = $(TESTS_CFLAGS) \
	-DDMIRROR_SHIM='"$(abs_top_builddir)/libhmm/.libs/libhmm_dmirror.so"' \
	-DHMMCTL_BIN='"$(abs_top_builddir)/hmmfs/hmmctl"'
tests_test_dmirror_hmmfs_LDADD = $(TESTS_LDADD)
tests_test_dmirror_hmmfs_LDFLAGS = $(AM_LDFLAGS) -no-install
tests_test_attach_SOURCES = tests/test_attach.c $(TEST_COMMON_SOURCES)
tests_test_attach_CFLAGS = $(TESTS_CFLAGS)
tests_test_attach_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_conformance_hmmfs_SOURCES = tests/test_conformance_hmmfs.c tests/snapshot.c \
	tests/snapshot.h $(TEST_COMMON_SOURCES)
tests_test_conformance_hmmfs_CFLAGS = $(TESTS_CFLAGS)
tests_test_conformance_hmmfs_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_anon_migrate_SOURCES = tests/test_anon_migrate.c $(TEST_COMMON_SOURCES)
tests_test_anon_migrate_CFLAGS = $(TESTS_CFLAGS)
tests_test_anon_migrate_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_conformance_access_SOURCES = tests/test_conformance_access.c tests/snapshot.c \
	tests/snapshot.h $(TEST_COMMON_SOURCES)
tests_test_conformance_access_CFLAGS = $(TESTS_CFLAGS)
tests_test_conformance_access_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_conformance_migrate_SOURCES = tests/test_conformance_migrate.c $(TEST_COMMON_SOURCES)
tests_test_conformance_migrate_CFLAGS = $(TESTS_CFLAGS)
tests_test_conformance_migrate_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_conformance_dummy_SOURCES = tests/test_conformance_dummy.c $(TEST_COMMON_SOURCES)
tests_test_conformance_dummy_CFLAGS = $(TESTS_CFLAGS)
tests_test_conformance_dummy_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_launch_SOURCES = tests/test_launch.c $(TEST_COMMON_SOURCES)
tests_test_launch_CFLAGS = $(TESTS_CFLAGS)
tests_test_launch_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_mirror_SOURCES = tests/test_mirror.c $(TEST_COMMON_SOURCES)
tests_test_mirror_CFLAGS = $(TESTS_CFLAGS)
tests_test_mirror_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_invalidate_SOURCES = tests/test_invalidate.c $(TEST_COMMON_SOURCES)
tests_test_invalidate_CFLAGS = $(TESTS_CFLAGS)
tests_test_invalidate_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_uffd_SOURCES = tests/test_uffd.c $(TEST_COMMON_SOURCES)
tests_test_uffd_CFLAGS = $(TESTS_CFLAGS)
tests_test_uffd_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_migrate_SOURCES = tests/test_migrate.c $(TEST_COMMON_SOURCES)
tests_test_migrate_CFLAGS = $(TESTS_CFLAGS)
tests_test_migrate_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
tests_test_hmmctl_SOURCES = tests/test_hmmctl.c $(TEST_COMMON_SOURCES)
tests_test_hmmctl_CFLAGS = $(TESTS_CFLAGS) -DHMMCTL_BIN='"$(abs_top_builddir)/hmmfs/hmmctl"'
tests_test_hmmctl_LDADD = $(TESTS_LDADD) libhmm/libhmm.la
# test_dma tests libhmm's internals, so it links the core library directly.
tests_test_dma_SOURCES = tests/test_dma.c $(TEST_COMMON_SOURCES)
tests_test_dma_CFLAGS = $(TESTS_CFLAGS)
tests_test_dma_LDADD = libhmm/libhmm-core.la $(CRITERION_LIBS) $(NUMA_LIBS)
# So does test_core (radix tree, pools, moving pages).
tests_test_core_SOURCES = tests/test_core.c tests/rng.h $(TEST_COMMON_SOURCES)
tests_test_core_CFLAGS = $(TESTS_CFLAGS)
tests_test_core_LDADD = libhmm/libhmm-core.la $(CRITERION_LIBS) $(NUMA_LIBS)
# And test_notifier (interval notifiers and the sequence protocol).
tests_test_notifier_SOURCES = tests/test_notifier.c $(TEST_COMMON_SOURCES)
tests_test_notifier_CFLAGS = $(TESTS_CFLAGS)
tests_test_notifier_LDADD = libhmm/libhmm-core.la $(CRITERION_LIBS) $(NUMA_LIBS)
# And test_range (hmm_range_fault on real memory).
tests_test_range_SOURCES = tests/test_range.c $(TEST_COMMON_SOURCES)
tests_test_range_CFLAGS = $(TESTS_CFLAGS)
tests_test_range_LDADD = libhmm/libhmm-core.la $(CRITERION_LIBS) $(NUMA_LIBS)
# And test_session (attaching to a mount's devices), with the mount fixture.
tests_test_session_SOURCES = tests/test_session.c $(TEST_COMMON_SOURCES)
tests_test_session_CFLAGS = $(TESTS_CFLAGS)
tests_test_session_LDADD = $(TESTS_LDADD) libhmm/libhmm-core.la $(NUMA_LIBS)
# And test_pagetable (device page tables and TLBs).
tests_test_pagetable_SOURCES = tests/test_pagetable.c tests/rng.h $(TEST_COMMON_SOURCES)
tests_test_pagetable_CFLAGS = $(TESTS_CFLAGS)
tests_test_pagetable_LDADD = libhmm/libhmm-core.la $(CRITERION_LIBS) $(NUMA_LIBS)
else
check-local: no-criterion
no-criterion:
	@echo "make check needs Criterion (libcriterion-dev); re-run configure after installing it" >&2
	@exit 1
endif

dist_check_SCRIPTS += tests/fio.sh tests/stress-ng.sh
TESTS += tests/fio.sh tests/stress-ng.sh

# `make stress`: the randomized migration race (test_migrate, migrate_race)
# for STRESS_SECONDS per case (default 60; make check runs 5) on seeds
# shifted by STRESS_SEED (default: the clock, printed so that a failure can
# be replayed with STRESS_SEED=n).  Needs root, like make check.
.PHONY: stress
if HAVE_CRITERION
stress: hmmfs/hmmfs$(EXEEXT) tests/test_migrate$(EXEEXT)
	@seed=$${STRESS_SEED:-$$(date +%s)}; \
	echo "stress: seed shift $$seed, $${STRESS_SECONDS:-60} s per case"; \
	HMMFS_BIN="$(abs_top_builddir)/hmmfs/hmmfs" HMMFS_STRESS_SEED=$$seed \
	HMMFS_STRESS_SECONDS=$${STRESS_SECONDS:-60} \
	tests/test_migrate$(EXEEXT) --filter 'migrate_race/*' --verbose=1 || \
	{ echo "stress: FAILED; replay with STRESS_SEED=$$seed" >&2; exit 1; }
else
stress: no-criterion
endif
