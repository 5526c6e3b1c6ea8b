#!/usr/bin/env bash
# Stock grpcio client <-> stock grpcio server, both delegating the ALTS
# handshake to OUR handshaker service running the INSECURE null test engine.
# Must run inside netns-run.sh (needs 127.0.0.1:8080 = metadata.google.internal.).
#
# Usage: stock-null-e2e.sh HANDSHAKER_BIN VENV_PYTHON LOG_DIR
# Prints "E2E PASS: <case>" / "E2E FAIL: <case>" lines; exit 0 iff all pass.
set -uo pipefail
hs_bin="$1"
py="$2"
logs="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pydir="$here/../python"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$logs"

# shellcheck source=lib.sh
source "$here/lib.sh"

# Stock clients that send no target_service_accounts get their server identity
# from this map (keyed by the dial target); others are refused.
cat >"$logs/targets.toml" <<'EOT'
[targets]
"127.0.0.1:50061" = ["null-server@insecure.test"]
EOT

# Stock grpcio dials metadata.google.internal.:8080, so TCP loopback (every
# process in this private namespace may call it).
RUST_LOG="${RUST_LOG:-alts_interop=debug}" "$hs_bin" --listen 127.0.0.1:8080 \
    --targets "$logs/targets.toml" --client-identity null-client@insecure.test --server-identity null-server@insecure.test \
    --timeout-secs 10 >"$logs/handshaker.out" 2>"$logs/handshaker.log" &
pids+=($!)
if ! wait_for "$logs/handshaker.out" "listening on" 20 "${pids[-1]}"; then
    echo "E2E FAIL: handshaker service did not start"; cat "$logs/handshaker.log"; exit 1
fi

"$py" "$pydir/stock_server.py" --port 50061 >"$logs/stock_server.log" 2>&1 &
pids+=($!)
if ! wait_for "$logs/stock_server.log" "listening on" 30 "${pids[-1]}"; then
    echo "E2E FAIL: stock server did not start"; cat "$logs/stock_server.log"; exit 1
fi

failed=0
run_case() {
    local name="$1"; shift
    echo "== case: $name"
    if timeout 60 "$py" "$pydir/stock_client.py" --server 127.0.0.1:50061 --timeout 10 "$@"; then
        echo "E2E PASS: $name"
    else
        echo "E2E FAIL: $name"; failed=1
    fi
}

run_case stock-client-to-stock-server-via-our-handshaker \
    --target-service-account null-server@insecure.test --rpcs 2 --response-size 65536
run_case stock-client-no-target-accounts --method unary --response-size 1
run_case stock-client-wrong-target-account-refused \
    --target-service-account someone-else@insecure.test --method health --expect-failure
# No target accounts and a dial target not in the handshaker's map: refused
# by the handshaker (fail closed), with the reason in the client's output.
echo "== case: stock-client-unmapped-target-refused"
out="$(timeout 60 "$py" "$pydir/stock_client.py" --server localhost:50061 --timeout 10 \
    --method health --expect-failure 2>&1)"; rc=$?
echo "$out"
if [[ $rc == 0 ]] && grep -q "names no target identities" <<<"$out"; then
    echo "E2E PASS: stock-client-unmapped-target-refused"
else
    echo "E2E FAIL: stock-client-unmapped-target-refused"; failed=1
fi

# The server must have seen the client's identity through ALTS.
if grep -q "peer='null-client@insecure.test'" "$logs/stock_server.log"; then
    echo "E2E PASS: stock-server-sees-client-identity"
else
    echo "E2E FAIL: stock-server-sees-client-identity"; failed=1
fi
exit $failed
