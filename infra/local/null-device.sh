#!/usr/bin/env bash
# Every make target that builds or runs something first makes sure /dev/null is the null
# device. On this machine kind it has been found as a regular file (2026-12-06: created
# when the machine started, mode 0666, size 0). Then whatever any process throws away is
# kept there, and a process given "/dev/null" as its input reads it back: cargo runs
# its target probe (`rustc - --crate-name ___ --print=...`) with stdin from /dev/null, so
# the rustc errors that build scripts' feature probes had thrown away became the probe's
# source, and `cargo clippy` failed with "failed to run `rustc` to learn about
# target-specific information". The device is put back (atomically: a new node renamed
# over the file), which needs root; otherwise this fails and says why.
set -eu
if [ -c /dev/null ]; then
	exit 0
fi
kind=$(stat -c %F /dev/null || echo missing)
echo "/dev/null is not the null device on this machine (it is: $kind); restoring it"
node="/dev/.null.$$"
if mknod -m 666 "$node" c 1 3 && mv -f "$node" /dev/null && [ -c /dev/null ]; then
	echo "/dev/null restored as the null device (character device 1,3)"
	exit 0
fi
rm -f "$node"
echo "cannot restore /dev/null (needs root and mknod): builds on this machine read what other" >&2
echo "processes discarded as their input. Restore it with: mknod -m 666 /dev/null c 1 3" >&2
exit 1
