#!/bin/sh
# SPDX-License-Identifier: MIT
#
# stress-ng.sh - run stress-ng's filesystem and file-mapping stressors on a
# live hmmfs, with their own data verification (--verify), in two rounds:
# data (write/read/seek/fallocate/mmap/msync/copy/readahead ...) and
# namespace (directories, dentries, renames, links, symlinks, xattrs,
# attributes, locks ...).  Any stressor that fails, or that skips itself
# for want of a feature (each of these runs on tmpfs), fails the test.
# Afterwards the mount must be empty and all its pages free again.
#
# Run by `make check` with automake's plain driver: exit 0 pass, 77 skip,
# 99 hard error (the test could not run), anything else a failure.
# Environment: HMMFS_BIN (the daemon), HMMFS_STRESS_TIMEOUT (seconds per
# round, default 6).

set -u

me=stress-ng.sh
timeout=${HMMFS_STRESS_TIMEOUT:-6}

skip() { echo "$me: SKIP: $*"; exit 77; }
hard() { echo "$me: ERROR: $*" >&2; exit 99; }

command -v stress-ng >/dev/null 2>&1 || skip "stress-ng is not installed"
command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 is not installed"
[ -c /dev/fuse ] || skip "/dev/fuse is missing"

bin=${HMMFS_BIN:-$(dirname "$0")/../hmmfs/hmmfs}
[ -x "$bin" ] || hard "no hmmfs binary at $bin (set HMMFS_BIN)"

# --- mount, and always unmount -------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/hmmfs-stress-ng.XXXXXX") || hard "mktemp failed"
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

# --- the stressors --------------------------------------------------------

# Sizes keep the data of all stressors of a round well under host_mem=1G:
# ENOSPC is test_capacity's subject, not this one's.
data_round="--hdd 1 --hdd-bytes 32M
	--mmap 1 --mmap-file --mmap-bytes 32M
	--msync 1 --msync-bytes 16M
	--fallocate 1 --fallocate-bytes 32M
	--seek 1 --seek-size 16M
	--copy-file 1 --copy-file-bytes 128M
	--iomix 1 --iomix-bytes 16M
	--sync-file 1 --sync-file-bytes 16M
	--readahead 1 --readahead-bytes 16M
	--fsize 1 --aio 1"
namespace_round="--dir 1 --dentry 1 --rename 1 --link 1 --symlink 1
	--xattr 1 --chmod 1 --chown 1 --utime 1 --filename 1
	--dirdeep 1 --dirmany 1 --getdent 1 --open 1
	--flock 1 --lockf 1 --fcntl 1 --file-ioctl 1"

fail=0
run_round() {
	round=$1
	shift
	log=$work/$round.log
	echo "$me: round $round: stress-ng $*"
	# stress-ng writes a few files in the current directory (e.g. for
	# --log-file); keep them out of the source tree.
	# shellcheck disable=SC2086 # the stressor list is meant to split
	(cd "$work" && stress-ng --temp-path "$mnt" --timeout "$timeout" \
		--verify --metrics-brief --log-file "$log" "$@" >/dev/null 2>&1)
	src=$?
	sed 's/^/  /' "$log"
	if [ "$src" -ne 0 ]; then
		echo "$me: FAIL: round $round: stress-ng exited with status $src" >&2
		fail=1
	fi
	if grep -q 'fail:\|error:\|skipp\|aborted early\|not implemented\|FAILED' "$log"; then
		echo "$me: FAIL: round $round: a stressor failed or skipped itself:" >&2
		grep 'fail:\|error:\|skipp\|aborted early\|not implemented\|FAILED' "$log" >&2
		fail=1
	fi
	if ! grep -q 'successful run completed' "$log"; then
		echo "$me: FAIL: round $round: no 'successful run completed' line" >&2
		fail=1
	fi
}

# shellcheck disable=SC2086
run_round data $data_round
# shellcheck disable=SC2086
run_round namespace $namespace_round

# --- afterwards: nothing left, every page free -----------------------------

check_space_freed
[ "$fail" -eq 0 ] && echo "$me: PASS"
exit "$fail"
