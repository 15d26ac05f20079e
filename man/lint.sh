#!/bin/sh
# SPDX-License-Identifier: MIT
#
# lint.sh - check every man page in man/: run `make check` fails on any
# warning groff gives (all warnings on, -ww), for the typesetter and for the
# terminal (-Tutf8, what man(1) uses), on a NAME section that mandb(8)
# cannot read (lexgrog), and on a .TH whose section is not the file's.
#
# The pages are found in $HMMFS_SRCDIR/man (set by `make check`), else next
# to this script.  Exit 0 clean, 1 warnings, 77 no groff, 99 no pages.
#
# groff 1.22.4 (Debian 12) has no -rCHECKSTYLE (that arrived in 1.23), so
# the style checks are the ones below.

set -u

me=lint.sh
if [ -n "${HMMFS_SRCDIR:-}" ]; then
	dir=$HMMFS_SRCDIR/man
else
	dir=$(dirname "$0")
fi

command -v groff >/dev/null 2>&1 || { echo "$me: SKIP: groff is not installed"; exit 77; }

pages=
for p in "$dir"/*.[1-8]; do
	[ -f "$p" ] && pages="$pages $p"
done
[ -n "$pages" ] || { echo "$me: ERROR: no man pages in $dir" >&2; exit 99; }

tmp=$(mktemp) || exit 99
trap 'rm -f "$tmp"' EXIT

fail=0
for p in $pages; do
	name=$(basename "$p")
	bad=0

	# -z: format but print nothing; only the diagnostics matter.
	for dev in ps utf8; do
		groff -man -ww -z -t -T"$dev" "$p" 2>"$tmp"
		rc=$?
		if [ "$rc" -ne 0 ] || [ -s "$tmp" ]; then
			echo "$me: $name: groff -T$dev (exit $rc):" >&2
			sed 's/^/  /' "$tmp" >&2
			bad=1
		fi
	done

	if command -v lexgrog >/dev/null 2>&1 && ! lexgrog "$p" >/dev/null 2>&1; then
		echo "$me: $name: lexgrog cannot parse the NAME section (whatis would miss it)" >&2
		bad=1
	fi

	section=${name##*.}
	th=$(awk '$1 == ".TH" { print $3; exit }' "$p")
	if [ "$th" != "$section" ]; then
		echo "$me: $name: .TH gives section '$th', the file name '$section'" >&2
		bad=1
	fi

	if [ "$bad" -eq 0 ]; then
		echo "$me: $name: clean"
	else
		fail=1
	fi
done
exit "$fail"
