#!/bin/sh
# SPDX-License-Identifier: MIT
#
# fio.sh - write files on a live hmmfs with fio and verify every block
# (crc32c plus the block's offset in its header), with 4 jobs at a time:
#
#   sequential and random writes through pwrite (psync) and through a shared
#   writable mapping (mmap), each verified by the job that wrote it;
#   then random writes verified by the other engine in a later fio job, so
#   that what went in through write() must come out of a mapping and the
#   other way round.
#
# Run by `make check` with automake's plain driver: exit 0 pass, 77 skip,
# 99 hard error (the test could not run), anything else a failure.
# Environment: HMMFS_BIN (the daemon), HMMFS_FIO_SIZE (file size per job,
# default 32m; 6 phases of 4 jobs, so the default writes 768 MiB).

set -u

me=fio.sh
size=${HMMFS_FIO_SIZE:-32m}

# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"

need_command fio
need_fuse
need_command jq "jq (to read fio's JSON report)"

hmmfs_mount host_mem=1G

# --- the jobs -----------------------------------------------------------

# randseed fixes the offsets and the data, so that a verify_only job in a
# later phase replays the same blocks as the phase that wrote them.
# filename_format without $jobname is what lets two phases share files;
# fio warns that writers might overlap, which is what we want here.
cat >"$work/job.fio" <<EOF
[global]
directory=$mnt
numjobs=4
size=$size
verify=crc32c
verify_fatal=1
verify_dump=0
verify_state_save=0
randseed=20240601
unlink=1

[seq-psync]
ioengine=psync
rw=write
bs=128k

[rand-psync]
stonewall
ioengine=psync
rw=randwrite
bs=4k
filename_format=rp.\$jobnum
unlink=0

[rand-psync-verify-mmap]
stonewall
ioengine=mmap
rw=randwrite
bs=4k
filename_format=rp.\$jobnum
verify_only=1

[seq-mmap]
stonewall
ioengine=mmap
rw=write
bs=64k

[rand-mmap]
stonewall
ioengine=mmap
rw=randwrite
bs=4k
filename_format=rm.\$jobnum
unlink=0

[rand-mmap-verify-psync]
stonewall
ioengine=psync
rw=randwrite
bs=4k
filename_format=rm.\$jobnum
verify_only=1
EOF

start=$(date +%s)
fio --output-format=json --output="$work/out" "$work/job.fio" 2>"$work/err"
frc=$?
echo "$me: fio exited with status $frc after $(($(date +%s) - start)) s"

# fio puts its warnings and verify reports in the output file ahead of the
# JSON document; keep them for the log and parse the rest.
sed -n '/^{/,$!p' "$work/out" >>"$work/err"
sed -n '/^{/,$p' "$work/out" >"$work/json"
if [ -s "$work/err" ]; then
	echo "$me: fio messages:"
	sed 's/^/  /' "$work/err"
fi

jq -r '.jobs[] | "\(.jobname) \(.error) \(.read.io_bytes) \(.write.io_bytes)"' \
	"$work/json" >"$work/jobs" 2>"$work/jqerr" || {
	cat "$work/jqerr" >&2
	echo "$me: FAIL: fio's report is not valid JSON" >&2
	exit 1
}

fail=0
njobs=0
while read -r name err rbytes wbytes; do
	njobs=$((njobs + 1))
	echo "$me: $name: error $err, read $rbytes bytes, written $wbytes bytes"
	if [ "$err" != 0 ]; then
		echo "$me: FAIL: job $name reported error $err" >&2
		fail=1
	fi
	# Every job reads back (verifies) what it covers: nothing read means
	# nothing was verified.
	if [ "$rbytes" = 0 ]; then
		echo "$me: FAIL: job $name verified nothing" >&2
		fail=1
	fi
done <"$work/jobs"

if [ "$njobs" -ne 24 ]; then
	echo "$me: FAIL: fio reported $njobs jobs, expected 24 (6 phases of 4)" >&2
	fail=1
fi
if [ "$frc" -ne 0 ]; then
	echo "$me: FAIL: fio exited with status $frc" >&2
	fail=1
fi
if grep -qi 'verify failed\|bad magic\|bad header' "$work/err"; then
	echo "$me: FAIL: fio reported a verify failure" >&2
	fail=1
fi
check_space_freed
[ "$fail" -eq 0 ] && echo "$me: PASS"
exit "$fail"
