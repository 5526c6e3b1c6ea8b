#!/usr/bin/env bash
# A local walk-through of the ALTS fleet on loopback, in a temporary
# directory:
#   1. bootstrap (the only manual step): a root, and first credentials for
#      the signer, one host agent and an on-call admin, with `alts`;
#   2. alts-signer and alts-agent start; the agent writes credential
#      directories for two replicas of greeter-prod and for frontend-prod;
#   3. two Echo servers (the replicas) serve from those directories while
#      handshake certificates (20 s lifetime here) rotate three times:
#      long-lived connections keep working, every new connection succeeds
#      and presents the replica's current certificate;
#   4. the admin revokes the client's handshake certificate: within seconds
#      (bound: 5 s) both replicas refuse a copy of it, while the agent has
#      already given the client a new one that works.
# Nothing in the credential directories is touched by hand after step 1.
# Usage: examples/fleet-walkthrough.sh   (about a minute; exits 0 on success)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p alts-cli -p alts-fleet -p alts-examples --bins
bin=$PWD/target/debug
work=$(mktemp -d)
pids=()
long=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
fail() { echo "walk-through FAILED: $*" >&2; exit 1; }

# Starts a program in the background; waits until its stdout shows $1.
start() {
    local ready=$1 name=$2; shift 2
    "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    for _ in $(seq 1 200); do
        grep -q "$ready" "$work/$name.out" 2>/dev/null && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/$name.log" >&2; fail "$name exited"; }
        sleep 0.1
    done
    cat "$work/$name.log" >&2
    fail "$name did not start"
}

say "1. bootstrap: root, and first credentials for the signer, the agent and an admin"
cd "$work"
"$bin/alts" ca init --out ca --name walkthrough >/dev/null
issue() { # identity category dir
    "$bin/alts" issue principal --ca ca --issuer bootstrap --identity "$1" --category "$2" --out "p/$3" >/dev/null
    "$bin/alts" issue handshake --principal "p/$3" --out "creds/$3" >/dev/null
}
issue alts-signer workload signer
issue agent-host1 workload agent
issue oncall-admin person admin
cat >policy.toml <<'EOF'
# Bootstrap credentials, issued offline.
[[rule]]
issuer = "bootstrap"
categories = ["workload", "person"]
identities = ["alts-signer", "agent-*", "oncall-admin"]
# Everything else: workloads issued by the host agents.
[[rule]]
issuer = "agent-*"
categories = ["workload"]
identities = ["*-prod"]
EOF
cat >signer-policy.toml <<'EOF'
[[allow]]
caller = "agent-*"
identities = ["*-prod"]
categories = ["workload"]
EOF
echo "root, alts-signer, agent-host1 and oncall-admin issued in $work"

say "2. alts-signer and alts-agent"
start "listening on" signer "$bin/alts-signer" --listen 127.0.0.1:0 --creds creds/signer \
    --issuance-policy policy.toml --ca-key ca/ca.key --signer-policy signer-policy.toml \
    --state "redb:$work/signer-state.redb" --audit-log signer-audit.jsonl --crl-dir signer-crl \
    --admin oncall-admin --sync-interval 1s
signer=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' signer.out | head -1)
echo "alts-signer on $signer"
cat >agent.toml <<EOF
state_dir = "$work/agent-state"
credentials = "$work/creds/agent"
issuance_policy = "$work/policy.toml"
handshake_lifetime = "20s"
renew_at = 0.5
jitter = 0.1
principal_validity = "1d"
crl_refresh = "1s"
key_ring_refresh = "2s"
retry_min = "200ms"
retry_max = "2s"

[signer]
address = "http://$signer"
identity = "alts-signer"

[[workload]]
identity = "greeter-prod"
cell = "cell-a"
dir = "$work/run/greeter-1"

[[workload]]
identity = "greeter-prod"
cell = "cell-a"
dir = "$work/run/greeter-2"

[[workload]]
identity = "frontend-prod"
cell = "cell-a"
dir = "$work/run/frontend"
EOF
"$bin/alts-agent" --config agent.toml >agent.out 2>agent.log &
pids+=($!)
for _ in $(seq 1 200); do
    [[ -e run/greeter-1/handshake.cert && -e run/greeter-2/handshake.cert && -e run/frontend/handshake.cert ]] && break
    sleep 0.1
done
[[ -e run/frontend/handshake.cert ]] || { cat agent.log >&2; fail "the agent wrote no credentials"; }
ls -la run/greeter-1 | sed 's/^/  /'

hs_id() { # the handshake certificate's revocation ID (the first one `alts inspect` prints)
    local out
    out=$("$bin/alts" inspect "$1/handshake.cert")
    awk '/revocation id/ {print $NF; exit}' <<<"$out"
}

say "3. two replicas of greeter-prod; calls while certificates rotate"
common=(--policy "$work/policy.toml")
start "serving ALTS" greeter-1 "$bin/server" --listen 127.0.0.1:0 --creds run/greeter-1 \
    --root run/greeter-1/root.pub --crl run/greeter-1/crl.bin "${common[@]}"
start "serving ALTS" greeter-2 "$bin/server" --listen 127.0.0.1:0 --creds run/greeter-2 \
    --root run/greeter-2/root.pub --crl run/greeter-2/crl.bin "${common[@]}"
addr1=$(sed -n 's/serving ALTS on //p' greeter-1.out)
addr2=$(sed -n 's/serving ALTS on //p' greeter-2.out)
call() { # address creds-dir
    "$bin/client" --server "http://$1" --creds "$2" --root "$2/root.pub" --target greeter-prod "${common[@]}" \
        >/dev/null 2>&1
}
# One long-lived connection to each replica, calling every second through
# every rotation (exit status 1 if any call fails).
for a in "$addr1" "$addr2"; do
    "$bin/client" --server "http://$a" --creds run/frontend --root run/frontend/root.pub \
        --target greeter-prod "${common[@]}" --repeat 45 --interval-ms 1000 >"long-$a.out" 2>&1 &
    pids+=($!); long+=($!)
done
# New connections: every call succeeds, and each presents the replica's
# current certificate (checked when no rotation is under way).
first=$(hs_id run/greeter-1)
seen=("$first")
declare -A cur=([1]="$first" [2]="$(hs_id run/greeter-2)") swap=([1]=0 [2]=0)
calls=0
checked=0
deadline=$(( $(date +%s) + 60 ))
while (( ${#seen[@]} < 4 )) && (( $(date +%s) < deadline )); do
    for r in 1 2; do
        a=$addr1; [[ $r == 2 ]] && a=$addr2
        before=$(hs_id "run/greeter-$r")
        now=$(date +%s%N)
        if [[ $before != "${cur[$r]}" ]]; then cur[$r]=$before; swap[$r]=$now; fi
        out=$("$bin/client" --server "http://$a" --creds run/frontend --root run/frontend/root.pub \
            --target greeter-prod "${common[@]}" 2>&1) || fail "call to greeter-$r failed during rotation: $out"
        after=$(hs_id "run/greeter-$r")
        served=$(sed -n 's/.*handshake certificate \(0x[0-9a-f]*\).*/\1/p' <<<"$out")
        # The replica applies a new set within a second of noticing it; check
        # once the set has been in place for 1.5 s (as far as we have seen).
        if [[ $before == "$after" ]] && (( (now - swap[$r]) / 1000000 > 1500 )); then
            [[ $served == "$before" ]] || fail "greeter-$r presented $served, not its current certificate $before"
            checked=$((checked + 1))
        fi
        calls=$((calls + 1))
    done
    id=$(hs_id run/greeter-1)
    if [[ " ${seen[*]} " != *" $id "* ]]; then
        seen+=("$id")
        echo "  greeter-1 rotated to handshake certificate $id"
    fi
    sleep 0.5
done
(( ${#seen[@]} >= 4 )) || fail "fewer than 3 rotations in 60 s"
(( checked > calls / 2 )) || fail "too few settled calls to check the certificate ($checked of $calls)"
echo "$calls new connections, all served ($checked checked: each presented the current certificate); 3 rotations"
for p in "${long[@]}"; do
    wait "$p" || fail "a long-lived connection failed during rotation: $(cat long-*.out)"
done
echo "  two long-lived connections made 45 calls each through the rotations, none failed"

say "4. revoke frontend-prod's handshake certificate"
mkdir stolen
cp -L run/frontend/handshake.cert run/frontend/handshake.key run/frontend/root.pub stolen/
victim=$(hs_id stolen)
"$bin/alts-fleetctl" --creds creds/admin --issuance-policy policy.toml --signer "http://$signer" \
    revoke --revocation-id "$victim" --reason "walk-through: key copied"
revoked_at=$(date +%s%N)
refused=0
for _ in $(seq 1 100); do
    if ! call "$addr1" stolen && ! call "$addr2" stolen; then refused=1; break; fi
    sleep 0.1
done
(( refused )) || fail "the revoked certificate is still accepted"
took=$(( ($(date +%s%N) - revoked_at) / 1000000 ))
echo "  both replicas refuse the copied certificate $victim, ${took} ms after the revocation"
(( took <= 5000 )) || fail "revocation took ${took} ms to reach both replicas (bound: 5 s)"
for _ in $(seq 1 100); do
    [[ $(hs_id run/frontend) != "$victim" ]] && break
    sleep 0.1
done
[[ $(hs_id run/frontend) != "$victim" ]] || fail "the agent did not replace the revoked certificate"
call "$addr1" run/frontend && call "$addr2" run/frontend || fail "the renewed client is refused"
echo "  the agent replaced it with $(hs_id run/frontend), which both replicas accept"

say "walk-through complete"
