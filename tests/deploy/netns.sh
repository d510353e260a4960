#!/usr/bin/env bash
# Multi-host simulation on one machine: the coordinator and two workers each in their own network
# namespace (ip netns), joined by veth pairs on a bridge, so they reach each other only over a
# real (virtual) network at 10.77.0.0/24 and never over a shared loopback. A client in a fourth
# namespace submits a run; the run ends byte-identical to the embedded `tessera run`. The
# filesystem is shared, as a cluster's shared filesystem is.
#
# Usage (as root): tests/deploy/netns.sh   (TESSERA_BIN: the binary; default target/debug/tessera)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$(realpath "${TESSERA_BIN:-target/debug/tessera}")
[ "$(id -u)" = 0 ] || { echo "FAIL: netns.sh needs root (ip netns)"; exit 1; }
command -v ip >/dev/null || { apt-get install -y -qq iproute2 >/dev/null; }

WORK=$(mktemp -d /tmp/tessera-netns.XXXXXX)
TAG=t$$
BR=${TAG}br
HOSTS=(coord w1 w2 client)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for h in "${HOSTS[@]}"; do ip netns del "$TAG-$h" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

# The network: a bridge in the root namespace; one namespace per host, each with a veth into it.
ip link add "$BR" type bridge
ip link set "$BR" up
i=1
for h in "${HOSTS[@]}"; do
    ns=$TAG-$h
    ip netns add "$ns"
    ip link add "${TAG}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${TAG}v$i" master "$BR" up
    ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    i=$((i + 1))
done
on() { local h=$1; shift; ip netns exec "$TAG-$h" "$@"; }
COORD_IP=10.77.0.1

# A recording and the reference result of the embedded runner.
"$BIN" simulate --frames 300 --height 64 --width 64 --seed 3 --chunks 100,32,32 \
    --out "$WORK/sim.zarr" >/dev/null
"$BIN" run "$ROOT/workflows/two-photon.yaml" --input "$WORK/sim.zarr" --output "$WORK/reference.run" \
    --tile-size 32 --workers 2 >/dev/null 2>"$WORK/reference.log" || fail "reference run"

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
chmod 600 "$WORK/token"
on coord "$BIN" coordinator --listen "$COORD_IP:7070" --state "$WORK/state.db" \
    --token-file "$WORK/token" --lease-ttl-ms 3000 >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening" "$WORK/coordinator.log" 2>/dev/null && break; sleep 0.1; done
grep -q "$COORD_IP:7070" "$WORK/coordinator.log" || fail "coordinator did not start on $COORD_IP:7070"
URL=http://$COORD_IP:7070

# A worker's host reaches the coordinator at its address, and not through its own loopback.
on w1 "$BIN" runs --coordinator "$URL" --token-file "$WORK/token" >/dev/null \
    || fail "w1 cannot reach the coordinator at $URL"
if on w1 "$BIN" runs --coordinator http://127.0.0.1:7070 --token-file "$WORK/token" \
    >/dev/null 2>&1; then
    fail "a worker's loopback reached the coordinator: the namespaces are not separate"
fi

for w in w1 w2; do
    on "$w" "$BIN" worker --coordinator "$URL" --token-file "$WORK/token" --slots 2 \
        --name "$w" >"$WORK/$w.log" 2>&1 &
    PIDS+=($!)
done

RUN=$(on client "$BIN" submit "$ROOT/workflows/two-photon.yaml" --input "$WORK/sim.zarr" \
    --output "$WORK/netns.run" --tile-size 32 --coordinator "$URL" --token-file "$WORK/token" \
    2>"$WORK/submit.log" | tail -1) || fail "submit"
echo "submitted $RUN from 10.77.0.4 to $URL"
on client timeout 300 "$BIN" status "$RUN" --watch --coordinator "$URL" \
    --token-file "$WORK/token" >"$WORK/status.log" 2>&1 || fail "run $RUN did not succeed"

python3 "$ROOT/tests/deploy/compare_runs.py" "$WORK/reference.run" "$WORK/netns.run" \
    || fail "results differ from the embedded run"
# Both workers took part, each from its own address.
for w in w1 w2; do
    grep -rqs "\"$w\"" "$WORK/netns.run/tasks"/*/provenance/record.json \
        || fail "no task record names worker $w"
done
echo "PASS: netns multi-host run ($RUN) identical to the embedded run; workers w1 and w2 both ran tasks"
