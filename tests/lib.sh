# SPDX-License-Identifier: MIT
# shellcheck shell=sh disable=SC2034,SC2154 # me is set, and fail read, by the script
#
# lib.sh - what the scripts that run a tool against a live hmmfs share: the
# exit codes of automake's plain driver, the checks that skip the test where
# FUSE is missing, and a mount that is always taken down again (the daemon
# must exit 0) however the script ends.
#
# Sourced, not run.  Set me (the script's name in messages) first, and find
# this file next to the script, which is in the source tree even when the
# build tree is elsewhere (make distcheck):
#
#   me=fio.sh
#   . "$(dirname "$0")/lib.sh"
#
# hmmfs_mount sets work (a scratch directory, removed at exit), mnt (the
# mount point, inside work) and pid (the daemon), and installs the EXIT trap
# that unmounts.  check_space_freed sets fail=1 on a failure.

skip() { echo "$me: SKIP: $*"; exit 77; }
hard() { echo "$me: ERROR: $*" >&2; exit 99; }

# need_command COMMAND [WHAT]: skip the test unless COMMAND is installed;
# WHAT names it in the message (default: COMMAND).
need_command() {
	command -v "$1" >/dev/null 2>&1 || skip "${2:-$1} is not installed"
}

# need_fuse: skip the test unless a mount is possible at all.
need_fuse() {
	need_command fusermount3
	[ -c /dev/fuse ] || skip "/dev/fuse is missing"
}

bin=${HMMFS_BIN:-$(dirname "$0")/../hmmfs/hmmfs}
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

# hmmfs_mount OPTIONS: make work and mnt, start the daemon in the
# foreground with -o OPTIONS and wait until the mount is live; from here on
# the EXIT trap unmounts.  A daemon that cannot mount is a hard error.
hmmfs_mount() {
	[ -x "$bin" ] || hard "no hmmfs binary at $bin (set HMMFS_BIN)"
	work=$(mktemp -d "${TMPDIR:-/tmp}/hmmfs-${me%.sh}.XXXXXX") || hard "mktemp failed"
	mnt=$work/mnt
	mkdir "$mnt" || hard "mkdir $mnt failed"
	pid=
	trap hmmfs_cleanup EXIT
	trap 'exit 130' INT TERM HUP

	"$bin" -f -o "$1" "$mnt" &
	pid=$!
	i=0
	until is_mounted "$mnt"; do
		daemon_running || { pid_done=$pid; pid=; wait "$pid_done"; hard "hmmfs exited before mounting (status $?)"; }
		i=$((i + 1))
		[ $i -le 100 ] || hard "hmmfs did not mount $mnt within 10 s"
		sleep 0.1
	done
}

# hmmfs_unmount: unmount with fusermount3 -u and wait for the daemon.
# Return 1, with the reason on stderr, if it had to be killed, did not exit
# 0 or left the mount behind.
hmmfs_unmount() {
	[ -n "$pid" ] || return 0
	unmount_rc=0
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
		unmount_rc=1
	else
		wait "$pid"
		st=$?
		if [ "$st" -ne 0 ]; then
			echo "$me: FAIL: hmmfs exited with status $st (expected 0)" >&2
			unmount_rc=1
		fi
	fi
	pid=
	if is_mounted "$mnt"; then
		echo "$me: FAIL: $mnt still mounted after the daemon exited" >&2
		umount -l "$mnt"
		unmount_rc=1
	fi
	return $unmount_rc
}

# The EXIT trap: unmount, turn a clean exit into a failure if that went
# wrong, and remove the scratch directory.
# shellcheck disable=SC2317 # reached through the EXIT trap
hmmfs_cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	hmmfs_unmount || { [ "$rc" -eq 0 ] && rc=1; }
	rm -rf "$work"
	exit "$rc"
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
