#!/usr/bin/env bash
# Cross-stack ALTS interop: stock grpcio (C-core) <-> native tonic-alts, and
# stock <-> stock through our `alts-handshaker`, with real credentials.
# Must run inside netns-run.sh (127.0.0.1:8080 = metadata.google.internal.).
#
# Usage: cross-stack.sh BIN_DIR VENV_PYTHON CREDS_DIR LOG_DIR
#   BIN_DIR: alts-handshaker, alts-interop-server, alts-interop-client
#   CREDS_DIR: root.pub, policy.toml, crl.bin and one directory per identity
#     (stock-a, native-server, native-client, stock-revoked, stock-rogue);
#     stock-revoked is in crl.bin, stock-rogue's issuer is not in policy.toml.
#
# Stock processes always dial metadata.google.internal.:8080, so each stock
# identity needs its own handshaker. We run three, on 127.0.0.1:8080
# (stock-a: the stock server and the default stock client), 127.0.0.2:8080
# (stock-revoked) and 127.0.0.3:8080 (stock-rogue); a stock client is pointed
# at another one by running it in a nested mount namespace whose /etc/hosts
# maps metadata.google.internal. to that address (same network namespace, so
# it still reaches every server). Every handshaker and native peer gets the
# same root, policy and CRL, and the same targets map (server identities for
# stock clients that send no target_service_accounts; other such clients are
# refused). Stock grpcio can only dial TCP, so the handshakers listen on
# loopback TCP explicitly (every process in this private namespace may call
# them).
#
# Prints "CROSS-STACK PASS: <case>" / "CROSS-STACK FAIL: <case>" lines and a
# count; exit 0 iff all pass.
set -uo pipefail
bin="$1"
py="$2"
creds="$3"
logs="$4"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pydir="$here/../python"
export PYTHONDONTWRITEBYTECODE=1
# tonic_alts logs each refused handshake at debug (and a rate-limited warn summary).
export RUST_LOG="${RUST_LOG:-info,alts_interop=debug,tonic_alts=debug}"
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/*.out

# shellcheck source=lib.sh
source "$here/lib.sh"

common=(--root "$creds/root.pub" --policy "$creds/policy.toml" --crl "$creds/crl.bin")
cat >"$logs/targets.toml" <<'EOT'
[targets]
"127.0.0.1:50071" = ["native-server"]
"127.0.0.1:50061" = ["stock-a"]
EOT
hs_common=("${common[@]}" --targets "$logs/targets.toml" --timeout-secs 10)

start() { # start NAME PATTERN CMD...
    local name="$1" pat="$2"; shift 2
    "$@" >"$logs/$name.log" 2>&1 &
    pids+=($!)
    if ! wait_for "$logs/$name.log" "$pat" 30 "${pids[-1]}"; then
        echo "CROSS-STACK FAIL: $name did not start"; cat "$logs/$name.log"; exit 1
    fi
}

start handshaker-stock-a "listening on" "$bin/alts-handshaker" --listen 127.0.0.1:8080 \
    --creds "$creds/stock-a" "${hs_common[@]}"
start handshaker-stock-revoked "listening on" "$bin/alts-handshaker" --listen 127.0.0.2:8080 \
    --creds "$creds/stock-revoked" "${hs_common[@]}"
start handshaker-stock-rogue "listening on" "$bin/alts-handshaker" --listen 127.0.0.3:8080 \
    --creds "$creds/stock-rogue" "${hs_common[@]}"
start native-server "listening on" "$bin/alts-interop-server" --listen 127.0.0.1:50071 \
    --creds "$creds/native-server" "${common[@]}"
start native-server-via-service "listening on" "$bin/alts-interop-server" --listen 127.0.0.1:50081 \
    --handshaker 127.0.0.1:8080
start stock-server "listening on" "$py" "$pydir/stock_server.py" --port 50061

# Hosts files sending stock processes to the other handshakers.
for n in 2 3; do
    { grep -v metadata.google.internal /etc/hosts
      echo "127.0.0.$n metadata.google.internal. metadata.google.internal"; } >"$logs/hosts.$n"
done
# as_identity N CMD...: run CMD with metadata.google.internal. = 127.0.0.N
as_identity() {
    local n="$1"; shift
    unshare --mount --propagation private bash -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
        "$logs/hosts.$n" "$@"
}

passed=0
failed=0
pass() { echo "CROSS-STACK PASS: $1"; passed=$((passed + 1)); }
fail() { echo "CROSS-STACK FAIL: $1 ($2)"; failed=$((failed + 1)); }
# check NAME RC WANT_RC OUTFILE [PATTERN FILE]...: rc as wanted and every PATTERN in its FILE
check() {
    local name="$1" rc="$2" want="$3" out="$4"; shift 4
    sed 's/^/    /' "$out"
    if [[ "$want" == 0 && "$rc" != 0 ]]; then fail "$name" "exit $rc"; return; fi
    if [[ "$want" != 0 && "$rc" == 0 ]]; then fail "$name" "succeeded but must fail"; return; fi
    while [[ $# -ge 2 ]]; do
        if ! grep -qF -- "$1" "$2"; then fail "$name" "no '$1' in $(basename "$2")"; return; fi
        [[ "$2" != "$out" ]] && echo "    [$(basename "$2")] $(grep -F -m1 -- "$1" "$2" | cut -c1-300)"
        shift 2
    done
    pass "$name"
}
stock_client() { # stock_client OUT ARGS...
    local out="$1"; shift
    timeout 60 "$py" "$pydir/stock_client.py" --timeout 10 "$@" >"$out" 2>&1
}
native_client() {
    local out="$1"; shift
    timeout 60 "$bin/alts-interop-client" --timeout-secs 10 "$@" >"$out" 2>&1
}
S="$logs/stock-server.log"
N="$logs/native-server.log"
NS="$logs/native-server-via-service.log"
H1="$logs/handshaker-stock-a.log"

echo "== stock grpcio client -> alts-interop-server (native)"
o="$logs/case1.out"; stock_client "$o" --server 127.0.0.1:50071 --target-service-account native-server \
    --rpcs 2 --response-size 65536; rc=$?
check stock-client-to-native-server $rc 0 "$o" \
    "server_identity='native-server'" "$o" 'peer="stock-a"' "$N"

echo "== alts-interop-client (native) -> stock grpcio server"
o="$logs/case2.out"; native_client "$o" --server 127.0.0.1:50061 --creds "$creds/native-client" \
    "${common[@]}" --expect-identity stock-a --rpcs 2 --response-size 65536; rc=$?
check native-client-to-stock-server $rc 0 "$o" \
    'handshake ok peer="stock-a"' "$o" "peer='native-client'" "$S"

echo "== stock grpcio client -> stock grpcio server, both through alts-handshaker"
o="$logs/case3.out"; stock_client "$o" --server 127.0.0.1:50061 --target-service-account stock-a; rc=$?
check stock-to-stock-via-alts-handshaker $rc 0 "$o" \
    "server_identity='stock-a'" "$o" "peer='stock-a'" "$S"

echo "== alts-interop-client --handshaker (tonic-alts service mode) -> alts-interop-server (native)"
o="$logs/case4.out"; native_client "$o" --server 127.0.0.1:50071 --handshaker 127.0.0.1:8080 \
    --expect-identity native-server; rc=$?
check tonic-via-handshaker-service-to-native-server $rc 0 "$o" \
    'handshake ok peer="native-server" category=workload issuer="interop-ca" local="stock-a"' "$o"

echo "== stock grpcio client -> alts-interop-server --handshaker (tonic-alts service mode)"
o="$logs/case5.out"; stock_client "$o" --server 127.0.0.1:50081 --target-service-account stock-a; rc=$?
check stock-client-to-tonic-server-via-handshaker-service $rc 0 "$o" \
    "server_identity='stock-a'" "$o" 'peer="stock-a" category=workload issuer="interop-ca"' "$NS"

echo "== refusal: stock client with a wrong target_service_accounts"
o="$logs/case6.out"; stock_client "$o" --server 127.0.0.1:50071 --target-service-account someone-else \
    --method health --expect-failure; rc=$?
check refused-wrong-target-service-account $rc 0 "$o" \
    'server identity "native-server" is not one of the target identities ["someone-else"]' "$o"

echo "== stock grpcio client without target_service_accounts: the handshaker's targets map names the server"
o="$logs/case6b.out"; stock_client "$o" --server 127.0.0.1:50071 --method health; rc=$?
check stock-client-target-from-handshaker-map $rc 0 "$o" "server_identity='native-server'" "$o"

echo "== refusal: stock client without target_service_accounts, dial target not in the map"
o="$logs/case6c.out"; stock_client "$o" --server 127.0.0.1:50081 --method health --expect-failure; rc=$?
check refused-stock-client-without-target $rc 0 "$o" \
    'client handshake to target_name "127.0.0.1:50081" names no target identities' "$o"

echo "== refusal: revoked stock client (its principal is in the CRL) -> native server and stock server"
o="$logs/case7a.out"; as_identity 2 "$py" "$pydir/stock_client.py" --timeout 10 --server 127.0.0.1:50071 \
    --method health --expect-failure >"$o" 2>&1; rc=$?
check refused-revoked-stock-peer-by-native-server $rc 0 "$o" \
    "principal certificate revoked" "$N" "peer certificate not accepted (alert code 3)" "$o"
o="$logs/case7b.out"; as_identity 2 "$py" "$pydir/stock_client.py" --timeout 10 --server 127.0.0.1:50061 \
    --method health --expect-failure >"$o" 2>&1; rc=$?
check refused-revoked-stock-peer-by-stock-server $rc 0 "$o" \
    "principal certificate revoked" "$H1"

echo "== refusal: policy-refused stock client (issuer rogue-ca) -> native server and stock server"
o="$logs/case8a.out"; as_identity 3 "$py" "$pydir/stock_client.py" --timeout 10 --server 127.0.0.1:50071 \
    --method health --expect-failure >"$o" 2>&1; rc=$?
check refused-policy-stock-peer-by-native-server $rc 0 "$o" 'unknown issuer "rogue-ca"' "$N" \
    'peer certificate not accepted (alert code 3)' "$o"
o="$logs/case8b.out"; as_identity 3 "$py" "$pydir/stock_client.py" --timeout 10 --server 127.0.0.1:50061 \
    --method health --expect-failure >"$o" 2>&1; rc=$?
check refused-policy-stock-peer-by-stock-server $rc 0 "$o" 'unknown issuer "rogue-ca"' "$H1"

echo "== servers keep serving after the refusals"
o="$logs/case9a.out"; stock_client "$o" --server 127.0.0.1:50071 --target-service-account native-server \
    --method unary; rc=$?
check native-server-still-serving $rc 0 "$o"
o="$logs/case9b.out"; native_client "$o" --server 127.0.0.1:50061 --creds "$creds/native-client" \
    "${common[@]}" --expect-identity stock-a --method health; rc=$?
check stock-server-still-serving $rc 0 "$o"

echo "CROSS-STACK: $passed passed, $failed failed"
[[ $failed == 0 ]]
