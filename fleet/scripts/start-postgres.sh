#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the alts-signer tests and prints
# its URL (the only line on standard output), e.g.
#   postgres://alts@127.0.0.1:54329/alts
#
# The cluster lives in a fresh temporary directory, listens on 127.0.0.1 only
# (the first free port of 54320-54329), trusts local connections (it holds
# nothing but test data) and keeps running after this script exits; stop it
# with the command printed on standard error. Run as root, the server runs
# as the `postgres` user (created by the Debian package) or, failing that,
# as `nobody`.
#
# Environment: PG_BIN (default: the newest /usr/lib/postgresql/*/bin, else
# the directory of `pg_ctl` on PATH).
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }

bin=${PG_BIN:-}
if [[ -z $bin ]]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [[ -z $bin ]] && command -v pg_ctl >/dev/null; then
    bin=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
fi
if [[ -z $bin || ! -x $bin/initdb ]]; then
    log "PostgreSQL server binaries not found (install the postgresql package or set PG_BIN)"
    exit 1
fi

run_as=()
owner=$(id -un)
if [[ $(id -u) == 0 ]]; then
    if id postgres >/dev/null 2>&1; then owner=postgres; else owner=nobody; fi
    run_as=(runuser -u "$owner" --)
fi

port=
for p in 54320 54321 54322 54323 54324 54325 54326 54327 54328 54329; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        port=$p
        break
    fi
done
if [[ -z $port ]]; then
    log "no free port in 54320-54329"
    exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/alts-pg.XXXXXX")
chmod 700 "$dir"
[[ $owner != "$(id -un)" ]] && chown "$owner" "$dir"
data=$dir/data
"${run_as[@]}" "$bin/initdb" -D "$data" -U alts --auth=trust --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
    log "initdb failed:"
    cat "$dir/initdb.log" >&2
    exit 1
}
"${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null || {
    log "the server did not start:"
    cat "$dir/server.log" >&2
    exit 1
}
"${run_as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U alts alts
log "running in $dir (log $dir/server.log); stop: ${run_as[*]} $bin/pg_ctl -D $data stop"
echo "postgres://alts@127.0.0.1:$port/alts"
