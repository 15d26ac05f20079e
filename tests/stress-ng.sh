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

# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"

need_command stress-ng
need_fuse

hmmfs_mount host_mem=1G

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
