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

skip() { echo "$me: SKIP: $*"; exit 77; }
hard() { echo "$me: ERROR: $*" >&2; exit 99; }

command -v fio >/dev/null 2>&1 || skip "fio is not installed"
command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 is not installed"
[ -c /dev/fuse ] || skip "/dev/fuse is missing"
command -v jq >/dev/null 2>&1 || skip "jq (to read fio's JSON report) is not installed"

bin=${HMMFS_BIN:-$(dirname "$0")/../hmmfs/hmmfs}
[ -x "$bin" ] || hard "no hmmfs binary at $bin (set HMMFS_BIN)"

# --- mount, and always unmount -------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/hmmfs-fio.XXXXXX") || hard "mktemp failed"
mnt=$work/mnt
mkdir "$mnt" || hard "mkdir $mnt failed"
pid=

is_mounted() {
	# Read the mount table rather than stat the directory: a hung daemon
	# would block stat forever.
	awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# The daemon is our child: once it has exited it stays a zombie until
# `wait`, and kill -0 still succeeds on a zombie, so look at its state.
daemon_running() {
	[ -r "/proc/$pid/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$state" ] && [ "$state" != Z ]
}

# After every file is gone, the mount must be empty and statfs must show
# every page free again (FORGETs for unlinked inodes may trail a little).
check_space_freed() {
	left=$(ls -A "$mnt" | head -n 5 | tr '\n' ' ')
	if [ -n "$left" ]; then
		echo "$me: FAIL: entries left on the mount: $left" >&2
		fail=1
		return
	fi
	i=0
	while :; do
		# shellcheck disable=SC2046
		set -- $(stat -f -c '%b %f %a' "$mnt")
		[ "$1" = "$2" ] && [ "$1" = "$3" ] && return
		i=$((i + 1))
		if [ $i -ge 100 ]; then
			echo "$me: FAIL: statfs: $(($1 - $2)) of $1 pages still in use" \
				"(f_bfree $2, f_bavail $3) with the mount empty" >&2
			fail=1
			return
		fi
		sleep 0.1
	done
}

# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$pid" ]; then
		fusermount3 -u "$mnt" 2>/dev/null
		# 30 s: freeing a large mount's pages is slow under ASan.
		i=0
		while daemon_running && [ $i -lt 300 ]; do
			i=$((i + 1))
			[ $((i % 50)) -eq 0 ] && fusermount3 -u "$mnt" 2>/dev/null
			sleep 0.1
		done
		if daemon_running; then
			echo "$me: FAIL: hmmfs did not exit after fusermount3 -u; killing it" >&2
			kill -9 "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			is_mounted "$mnt" && umount -l "$mnt"
			[ "$rc" -eq 0 ] && rc=1
		else
			wait "$pid"
			st=$?
			if [ "$st" -ne 0 ]; then
				echo "$me: FAIL: hmmfs exited with status $st (expected 0)" >&2
				[ "$rc" -eq 0 ] && rc=1
			fi
		fi
		if is_mounted "$mnt"; then
			echo "$me: FAIL: $mnt still mounted after the daemon exited" >&2
			umount -l "$mnt"
			[ "$rc" -eq 0 ] && rc=1
		fi
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

"$bin" -f -o host_mem=1G "$mnt" &
pid=$!
i=0
until is_mounted "$mnt"; do
	daemon_running || { pid_done=$pid; pid=; wait "$pid_done"; hard "hmmfs exited before mounting (status $?)"; }
	i=$((i + 1))
	[ $i -le 100 ] || hard "hmmfs did not mount $mnt within 10 s"
	sleep 0.1
done

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
