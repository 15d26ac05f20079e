# Examples of the libhmm API: short programs, built and run by
# `make check` (examples/run.sh checks what each one prints).  Each builds
# on its own with: cc FILE.c $(pkg-config --cflags --libs libhmm).
EXAMPLES = examples/kernel_vadd examples/mirror_invalidate examples/migrate_fault_back \
	examples/exclusive_atomics examples/matmul
check_PROGRAMS += $(EXAMPLES)
examples_kernel_vadd_SOURCES = examples/kernel_vadd.c
examples_kernel_vadd_LDADD = libhmm/libhmm.la
examples_kernel_vadd_LDFLAGS = $(AM_LDFLAGS) -no-install
examples_mirror_invalidate_SOURCES = examples/mirror_invalidate.c
examples_mirror_invalidate_LDADD = libhmm/libhmm.la
examples_mirror_invalidate_LDFLAGS = $(AM_LDFLAGS) -no-install
examples_migrate_fault_back_SOURCES = examples/migrate_fault_back.c
examples_migrate_fault_back_LDADD = libhmm/libhmm.la
examples_migrate_fault_back_LDFLAGS = $(AM_LDFLAGS) -no-install
examples_exclusive_atomics_SOURCES = examples/exclusive_atomics.c
examples_exclusive_atomics_LDADD = libhmm/libhmm.la
examples_exclusive_atomics_LDFLAGS = $(AM_LDFLAGS) -no-install
examples_matmul_SOURCES = examples/matmul.c examples/matmul_kernel.h
examples_matmul_LDADD = libhmm/libhmm.la
examples_matmul_LDFLAGS = $(AM_LDFLAGS) -no-install
dist_check_SCRIPTS += examples/run.sh
TESTS += examples/run.sh
