#!/usr/bin/env bash
# Creates (idempotently) the interop venv in target/interop-venv with stock
# grpcio, and generates Python stubs from the repo's protos into
# target/interop-py (never committed).
#
# Usage: interop/python/setup_venv.sh     (prints the venv python path last)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/interop-venv"
gen="$target/interop-py"
req="$here/requirements.txt"
stamp="$venv/.requirements.stamp"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" ]] || ! cmp -s "$req" "$stamp"; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
    cp "$req" "$stamp"
fi

protos=(
    grpc/gcp/transport_security_common.proto
    grpc/gcp/altscontext.proto
    grpc/testing/empty.proto
    grpc/testing/messages.proto
    grpc/testing/test.proto
    grpc/health/v1/health.proto
)
gen_stamp="$gen/.stamp"
need=0
# The stamp records the proto list and grpcio-tools pin; any change regenerates.
stamp_text="${protos[*]} $(grep grpcio-tools "$req")"
[[ -f "$gen_stamp" && "$(cat "$gen_stamp")" == "$stamp_text" ]] || need=1
if [[ $need == 0 ]]; then
    for p in "${protos[@]}"; do
        [[ "$root/proto/proto/$p" -nt "$gen_stamp" ]] && need=1
    done
fi
if [[ $need == 1 ]]; then
    rm -rf "$gen"
    mkdir -p "$gen"
    (cd "$root/proto/proto" && "$venv/bin/python" -m grpc_tools.protoc -I. \
        --python_out="$gen" --grpc_python_out="$gen" "${protos[@]}")
    printf '%s' "$stamp_text" >"$gen_stamp"
fi
echo "$venv/bin/python"
