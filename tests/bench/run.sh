#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run.sh - mount hmmfs, a tmpfs and fuse_min side by side, run the benchmark
# on the three, and unmount everything again, also after a failure.
#
# Usage: run.sh HMMFS_BIN FUSE_MIN_BIN BENCH_BIN [bench options...]
#   `make bench` passes the binaries of the build tree.  Environment:
#   BENCH_RA_KB      read_ahead_kb for both FUSE mounts (default 1024)
#   BENCH_HOST_MEM   hmmfs -o host_mem and the tmpfs size (default 3G)
#   BENCH_HMMFS_OPTS extra -o options for hmmfs
#   BENCH_DEVICE_BIN   bench_device: when set (`make bench` sets it), four
#                      more hmmfs mounts with one private device each are
#                      made after the main table (dma_engines=1 and 2, then
#                      the same with dma_bw) and bench_device prints the
#                      device table, with fuse_min as its fault baseline
#   BENCH_DEVICE_FLAGS options for bench_device (e.g. '-v -r 5')
#   BENCH_DEVICE_MEM   device_mem of those mounts (default 1G)
#   BENCH_DMA_BW       dma_bw of the throttled mounts (default 500M)
#   BENCH_DEVICE_ONLY  1: skip the main table, print only the device table
# A binary given as "-" skips that column.  Needs root: it mounts, and the
# benchmark writes /proc/sys/vm/drop_caches and the bdi read-ahead.

set -u

if [ $# -lt 3 ]; then
	echo "usage: $0 HMMFS_BIN FUSE_MIN_BIN BENCH_BIN [bench options...]" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "$0: the benchmark must run as root (it mounts filesystems and drops caches)" >&2
	exit 1
fi

hmmfs_bin=$1
fuse_min_bin=$2
bench_bin=$3
shift 3
ra_kb=${BENCH_RA_KB:-1024}
host_mem=${BENCH_HOST_MEM:-3G}
hmmfs_opts=host_mem=$host_mem${BENCH_HMMFS_OPTS:+,$BENCH_HMMFS_OPTS}

for bin in "$hmmfs_bin" "$fuse_min_bin" "$bench_bin"; do
	if [ "$bin" != - ] && [ ! -x "$bin" ]; then
		echo "$0: $bin: not built (run make first)" >&2
		exit 1
	fi
done

hmmfs_dir=
tmpfs_dir=
fuse_min_dir=
hmmfs_pid=
fuse_min_pid=
dev_dirs=
dev_pids=

is_mounted() {
	mountpoint -q "$1" 2>/dev/null
}

# Unmount a FUSE mount and wait for its daemon; kill it and detach the
# mount lazily if it does not go away in time.
fuse_down() {
	dir=$1
	pid=$2
	[ -n "$dir" ] || return 0
	if is_mounted "$dir"; then
		fusermount3 -u "$dir" 2>/dev/null || umount "$dir" 2>/dev/null
	fi
	if [ -n "$pid" ]; then
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "$0: daemon $pid did not exit; killing it" >&2
			kill -KILL "$pid" 2>/dev/null
		fi
		wait "$pid" 2>/dev/null
	fi
	if is_mounted "$dir"; then
		umount -l "$dir" 2>/dev/null
	fi
	rmdir "$dir" 2>/dev/null
}

cleanup() {
	set -- $dev_pids
	for d in $dev_dirs; do
		fuse_down "$d" "$1"
		shift
	done
	dev_dirs=''
	dev_pids=''
	fuse_down "$hmmfs_dir" "$hmmfs_pid"
	fuse_down "$fuse_min_dir" "$fuse_min_pid"
	if [ -n "$tmpfs_dir" ]; then
		umount "$tmpfs_dir" 2>/dev/null || umount -l "$tmpfs_dir" 2>/dev/null
		rmdir "$tmpfs_dir" 2>/dev/null
	fi
	hmmfs_dir=''
	fuse_min_dir=''
	tmpfs_dir=''
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Start a FUSE daemon in the foreground, in the background of this shell,
# and wait for its mount.  Sets started_pid.
fuse_up() {
	dir=$1
	shift
	"$@" &
	started_pid=$!
	i=0
	while ! is_mounted "$dir"; do
		if ! kill -0 "$started_pid" 2>/dev/null || [ $i -ge 100 ]; then
			echo "$0: $1 did not mount $dir" >&2
			return 1
		fi
		sleep 0.1
		i=$((i + 1))
	done
}

set_readahead() {
	dev=$(mountpoint -d "$1") || return 1
	if ! echo "$ra_kb" > "/sys/class/bdi/$dev/read_ahead_kb"; then
		echo "$0: cannot set read_ahead_kb of $1 ($dev)" >&2
		return 1
	fi
}

hmmfs_arg=-
tmpfs_arg=-
fuse_min_arg=-

if [ "$hmmfs_bin" != - ]; then
	hmmfs_dir=$(mktemp -d /tmp/bench-hmmfs.XXXXXX) || exit 1
	fuse_up "$hmmfs_dir" "$hmmfs_bin" -f -o "$hmmfs_opts" "$hmmfs_dir" || exit 1
	hmmfs_pid=$started_pid
	set_readahead "$hmmfs_dir" || exit 1
	hmmfs_arg=$hmmfs_dir
fi

tmpfs_dir=$(mktemp -d /tmp/bench-tmpfs.XXXXXX) || exit 1
if ! mount -t tmpfs -o "size=$host_mem" bench-tmpfs "$tmpfs_dir"; then
	rmdir "$tmpfs_dir"
	tmpfs_dir=
	exit 1
fi
tmpfs_arg=$tmpfs_dir

if [ "$fuse_min_bin" != - ]; then
	fuse_min_dir=$(mktemp -d /tmp/bench-fuse_min.XXXXXX) || exit 1
	fuse_up "$fuse_min_dir" "$fuse_min_bin" -f "$fuse_min_dir" || exit 1
	fuse_min_pid=$started_pid
	set_readahead "$fuse_min_dir" || exit 1
	fuse_min_arg=$fuse_min_dir
fi

if [ "$bench_bin" = - ]; then
	echo "$0: no benchmark binary" >&2
	exit 1
fi
status=0
if [ "${BENCH_DEVICE_ONLY:-0}" != 1 ]; then
	"$bench_bin" "$@" "$hmmfs_arg" "$tmpfs_arg" "$fuse_min_arg"
	status=$?
fi

# The device table.  Each mount has one private device; the four differ
# only in their DMA settings.  All four use the same read_ahead_kb as the
# mounts above, fuse_min included.
if [ -n "${BENCH_DEVICE_BIN:-}" ] && [ "$hmmfs_bin" != - ]; then
	if [ ! -x "$BENCH_DEVICE_BIN" ]; then
		echo "$0: $BENCH_DEVICE_BIN: not built (run make first)" >&2
		exit 1
	fi
	dev_mem=${BENCH_DEVICE_MEM:-1G}
	dma_bw=${BENCH_DMA_BW:-500M}
	dev_args=
	for dma in dma_engines=1 dma_engines=2 \
		   "dma_engines=1,dma_bw=$dma_bw" "dma_engines=2,dma_bw=$dma_bw"; do
		d=$(mktemp -d /tmp/bench-hmmfs-dev.XXXXXX) || exit 1
		dev_dirs="$dev_dirs $d"
		if ! fuse_up "$d" "$hmmfs_bin" -f \
			-o "$hmmfs_opts,devices=1,device_mem=$dev_mem,device_type=private,$dma" "$d"; then
			dev_pids="$dev_pids $started_pid"
			exit 1
		fi
		dev_pids="$dev_pids $started_pid"
		set_readahead "$d" || exit 1
		dev_args="$dev_args $d"
	done
	# shellcheck disable=SC2086 # word splitting wanted: flags and directories
	"$BENCH_DEVICE_BIN" ${BENCH_DEVICE_FLAGS:-} $dev_args "$fuse_min_arg"
	dev_status=$?
	[ $status -ne 0 ] || status=$dev_status
fi
cleanup
exit $status
