#!/usr/bin/env bash
# Runs a command as on a freshly booted machine: in a private mount namespace
# where tracefs, debugfs and bpffs are not mounted (each is lazily unmounted
# there, however often it is mounted; nothing changes outside). What the
# command needs, it must mount itself.
#
#   scripts/fresh-mounts.sh cargo xtask test
#
# Needs root (unshare -m) and util-linux (unshare, findmnt, umount).
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: $0 needs root (a private mount namespace)" >&2
    exit 1
fi

if [ "${1-}" != "--inside" ]; then
    # --propagation private: the unmounts below stay in the new namespace.
    exec unshare -m --propagation private -- bash "${BASH_SOURCE[0]}" --inside "$@"
fi
shift

mounted() {
    # Deepest first, so that /sys/kernel/debug/tracing goes before /sys/kernel/debug.
    # (findmnt exits 1 when it finds none.)
    { findmnt -rn -o TARGET,FSTYPE -t tracefs,debugfs,bpf || true; } | sort -r
}

unmounted=0
for _round in $(seq 1 50); do
    list=$(mounted)
    [ -z "$list" ] && break
    while read -r target fstype; do
        # findmnt -r writes a space as \x20.
        target=$(printf '%b' "$target")
        if umount -l "$target"; then
            echo "fresh-mounts: unmounted $fstype at $target"
            unmounted=$((unmounted + 1))
        fi
    done <<<"$list"
done
if [ -n "$(mounted)" ]; then
    echo "error: still mounted after 50 rounds of unmounting:" >&2
    mounted >&2
    exit 1
fi
if [ "$unmounted" -eq 0 ]; then
    echo "fresh-mounts: no tracefs, debugfs or bpffs was mounted"
fi
echo "fresh-mounts: running $* with none of them mounted"
exec "$@"
