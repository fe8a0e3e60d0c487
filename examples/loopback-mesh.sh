#!/usr/bin/env bash
# A three-node prober mesh on loopback addresses: one collector, and a pod-kind and a
# host-kind agent per "node" (examples/loopback-inventory.yaml). No root needed.
#
#   examples/loopback-mesh.sh            run until Ctrl-C; the collector is on http://127.0.0.1:9090
#   examples/loopback-mesh.sh --sweep    wait for the agents, run `prober sweep`, stop everything
#
# PROBER_PORT (default 9090) is the collector's port; PROBER_AGENT_PORT (default 18080)
# the agents' HTTP port, their UDP port the next one up.
#
# Every process it starts is stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

prober=${PROBER:-prober}
command -v "${prober%% *}" >/dev/null || prober=.venv/bin/prober
port=${PROBER_PORT:-9090}
collector=http://127.0.0.1:$port
inventory=examples/loopback-inventory.yaml
http_port=${PROBER_AGENT_PORT:-18080}
udp_port=$((http_port + 1))
inventory_copy=
if [ "$http_port" != 18080 ]; then  # the same inventory, on the ports asked for
  inventory_copy=$(mktemp "${TMPDIR:-/tmp}/loopback-inventory.XXXXXX.yaml")
  sed "s/http_port: 18080, udp_port: 18081/http_port: $http_port, udp_port: $udp_port/" \
    examples/loopback-inventory.yaml >"$inventory_copy"
  inventory=$inventory_copy
fi

ready() {  # ready URL: does it answer 200?
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null
}

agents=()
collector_pid=
cleanup() {
  # Agents first (they flush their last results to the collector), then the collector.
  [ ${#agents[@]} -eq 0 ] || kill -TERM "${agents[@]}" 2>/dev/null || true
  for pid in "${agents[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$collector_pid" ]; then
    kill -TERM "$collector_pid" 2>/dev/null || true
    wait "$collector_pid" 2>/dev/null || true
  fi
  [ -z "$inventory_copy" ] || rm -f "$inventory_copy"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

$prober --log-level warning collector --inventory "$inventory" --listen 127.0.0.1 --port "$port" \
  --interval 2 --timeout 1 &
collector_pid=$!
for _ in $(seq 1 100); do ready "$collector/readyz" && break; sleep 0.1; done

for i in 1 2 3; do
  n=$(printf '%s' abc | cut -c"$i")
  $prober --log-level warning agent --network pod --node "node-$n" --name "agent-pod-$n" \
    --listen "127.0.11.$i" --source-ip "127.0.11.$i" --http-port "$http_port" --udp-port "$udp_port" \
    --collector "$collector" &
  agents+=($!)
  $prober --log-level warning agent --network host --node "node-$n" --name "agent-host-$n" \
    --listen "127.0.10.$i" --source-ip "127.0.10.$i" --http-port "$http_port" --udp-port "$udp_port" \
    --collector "$collector" &
  agents+=($!)
done

# Ready when every agent answers its own /readyz.
n_ready=0
for _ in $(seq 1 100); do
  n_ready=0
  for i in 1 2 3; do
    for net in 10 11; do
      if ready "http://127.0.$net.$i:$http_port/readyz"; then n_ready=$((n_ready + 1)); fi
    done
  done
  [ "$n_ready" -eq 6 ] && break
  sleep 0.2
done
echo "mesh: collector on $collector, $n_ready of 6 agents ready" >&2

if [ "${1:-}" = "--sweep" ]; then
  sleep 3  # a pinglist round trip, so every agent knows its peers
  $prober sweep --collector "$collector"
else
  echo "try: prober sweep --collector $collector   (Ctrl-C stops the mesh)" >&2
  wait
fi
