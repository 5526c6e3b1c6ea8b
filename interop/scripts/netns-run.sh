#!/usr/bin/env bash
# Runs a command in a private "fake GCE" world, without touching the host:
# new mount + network namespaces with only `lo` (up), a tmpfs over
# /sys/class whose dmi/id/product_name says "Google Compute Engine", an
# /etc/hosts copy mapping metadata.google.internal(.) to 127.0.0.1 and a
# resolv.conf pointing at 127.0.0.1. Stock gRPC then enables ALTS and dials
# its handshaker service at metadata.google.internal.:8080 = 127.0.0.1:8080.
#
# Usage: interop/scripts/netns-run.sh COMMAND [ARGS...]
# Exit status: the command's, or 77 with a "SKIP: ..." line on stdout when
# namespaces are not available (not root, unshare refused, ...).
set -euo pipefail

SKIP_CODE=77
skip() {
    echo "SKIP: netns-run: $*"
    exit "$SKIP_CODE"
}

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if [[ "${NETNS_RUN_INNER:-}" != "1" ]]; then
    [[ "$(id -u)" == 0 ]] || skip "needs root for unshare --mount --net (uid $(id -u))"
    command -v unshare >/dev/null || skip "unshare not installed"
    command -v ip >/dev/null || skip "ip (iproute2) not installed"
    if ! err="$(unshare --mount --net --fork true 2>&1)"; then
        skip "unshare --mount --net not permitted here: ${err}"
    fi
    NETNS_RUN_INNER=1 exec unshare --mount --net --fork --propagation private "$0" "$@"
fi

# ---- inside the namespaces ----
unset NETNS_RUN_INNER
ip link set lo up

work="$(mktemp -d /tmp/netns-run.XXXXXX)"
# Files for bind mounts live outside the tmpfs so /sys/class can be replaced.
{
    if [[ -r /etc/hosts ]]; then cat /etc/hosts; fi
    echo "127.0.0.1 metadata.google.internal. metadata.google.internal"
} >"$work/hosts"
echo "nameserver 127.0.0.1" >"$work/resolv.conf"

mount -t tmpfs -o size=1m,mode=0755 netns-run-sysclass /sys/class
mkdir -p /sys/class/dmi/id
echo "Google Compute Engine" >/sys/class/dmi/id/product_name
[[ -e /etc/hosts ]] || touch /etc/hosts
mount --bind "$work/hosts" /etc/hosts
if [[ ! -e /etc/resolv.conf ]]; then
    touch /etc/resolv.conf
fi
mount --bind "$work/resolv.conf" /etc/resolv.conf

# Namespaces (and these mounts) die with the last process; the temp dir is
# on the host's /tmp, so remove it when the command ends.
set +e
"$@"
rc=$?
rm -rf "$work"
exit $rc
