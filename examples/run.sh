#!/bin/sh
# SPDX-License-Identifier: MIT
# Run every example and check its output: `make check` runs this.
# Each line below is "example: a line its output must contain".
set -u
dir=${EXAMPLES_DIR:-examples}
fail=0
expect() {
	prog=$1
	shift
	args=
	for a in "$@"; do
		[ "$a" = "--" ] && args=yes
	done
	if [ -n "$args" ]; then
		# expect PROG LINE... -- ARG: run PROG ARG (one argument).
		eval "arg=\${$#}"
		out=$("$dir/$prog" "$arg" 2>&1)
	else
		out=$("$dir/$prog" 2>&1)
	fi
	status=$?
	printf '%s\n' "$out" | sed "s/^/$prog: /"
	if [ $status -ne 0 ]; then
		echo "$prog: FAILED: exit status $status"
		fail=1
		return
	fi
	for want in "$@"; do
		[ "$want" = "--" ] && break
		printf '%s\n' "$out" | grep -qF -- "$want" || {
			echo "$prog: FAILED: no line with: $want"
			fail=1
		}
	done
}
expect kernel_vadd "c = a + b over 1048576 floats: ok" "launches: 1"
expect mirror_invalidate \
	"device read of 64 pages: ok, first byte 0x5a" \
	"after the device read:             device pages mapped:  64, invalidations: 0" \
	"after madvise(DONTNEED) of half:   device pages mapped:  32, invalidations: 1" \
	"device read of a dropped page: ok, first byte 0x00 (the CPU sees 0x00)" \
	"device write to a read-only page: EPERM" \
	"device read of an unmapped page: EFAULT"
expect migrate_fault_back \
	"moved 256 pages to dev0" \
	"after a kernel on dev0:            dev0 holds 256 pages, dev1   0; pages back from dev0:   0, CPU faults:   0" \
	"after dev1 read 16 pages:          dev0 holds 240 pages, dev1   0; pages back from dev0:  16, CPU faults:  16" \
	"after the CPU read everything:     dev0 holds   0 pages, dev1   0; pages back from dev0: 256, CPU faults: 256" \
	"x[i] == 2 * i for all 131072 doubles: ok"
expect exclusive_atomics "counter = 10000 device adds + 10000 CPU adds = 20000: ok" \
	"the device took the page"
expect matmul "explicit device buffers: checksum 69888987" \
	"pages migrated to the device 96, back 32" \
	"plain malloc'd pointers: checksum 69888987" \
	"pages migrated to the device 0, back 0" \
	"same result: yes"
# The same product on matrices in a file of an hmmfs mount, when FUSE is
# there (make check runs as root; a plain user may not mount).
me=run.sh
bin=${HMMFS_BIN:-hmmfs/hmmfs}
. "${HMMFS_SRCDIR:-$(dirname "$0")/..}/tests/lib.sh"
if command -v fusermount3 >/dev/null 2>&1 && [ -c /dev/fuse ] && [ -x "$bin" ]; then
	hmmfs_mount "devices=1,device_mem=16M"
	expect matmul "hmmfs file: 256 KiB on device 0 before the launch" \
		"hmmfs file: 256 KiB on device 0 after the launch, 0 pages brought back" \
		"hmmfs file: checksum 69888987" \
		"same result: yes" -- "$mnt"
else
	echo "run.sh: matmul on an hmmfs file: skipped (no FUSE here)"
fi
exit $fail
