#!/usr/bin/env bash
# 3 processes (peers) on 3 hosts, made with network namespaces: each host has its own
# network stack and one address on a shared bridge; Apache Kafka (tests/kafka/start.sh) runs
# on the bridge. `emostream load` then registers 9 SSE clients through host 2 (so
# registrations are forwarded to process 0), follows each client's events URL on the host
# that owns its subscriber, sends reactions to host 2, and checks every window on every
# client against its ledger.
#
#   tests/multihost.sh [path/to/emostream]     (default: target/debug/emostream)
#
# Needs root (ip netns), iproute2, and Java 17 with Maven for Kafka. Without them it says why and exits 0
# (skipped), unless EMOSTREAM_REQUIRE_NETNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(realpath "${1:-target/debug/emostream}")
skip() {
  if [ "${EMOSTREAM_REQUIRE_NETNS:-}" = 1 ]; then
    echo "multihost: cannot run: $*" >&2
    exit 1
  fi
  echo "multihost: SKIPPED: $*"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root for ip netns"
command -v ip >/dev/null || skip "needs ip (iproute2)"
command -v java >/dev/null || skip "needs Java 17 for Apache Kafka (tests/kafka/start.sh)"
[ -x "$bin" ] || skip "no emostream binary at $bin (cargo build first)"

tag=es$$
bridge=${tag}br
net=10.77.$(( $$ % 200 + 20 ))
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash tests/kafka/start.sh stop "$work/kafka" >/dev/null 2>&1 || true
  for h in 0 1 2; do ip netns del "${tag}h$h" 2>/dev/null || true; done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip link add "$bridge" type bridge || skip "cannot create a bridge here"
ip addr add "$net.254/24" dev "$bridge"
ip link set "$bridge" up
for h in 0 1 2; do
  ns=${tag}h$h
  ip netns add "$ns"
  ip link add "${tag}v$h" type veth peer name eth0 netns "$ns"
  ip link set "${tag}v$h" master "$bridge" up
  ip -n "$ns" addr add "$net.$((h + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

broker=$(bash tests/kafka/start.sh start "$work/kafka" "$net.254" 9092) \
  || { echo "multihost: Apache Kafka did not start" >&2; tail -30 "$work/kafka/kafka.log" >&2; exit 1; }

: >"$work/hosts"
head -c 32 /dev/urandom | base64 >"$work/cluster.secret"
for h in 0 1 2; do
  echo "$net.$((h + 1)):2101 http://$net.$((h + 1)):8080" >>"$work/hosts"
done
echo "multihost: hosts $net.1, $net.2, $net.3; broker $broker"
for h in 0 1 2; do
  ip netns exec "${tag}h$h" "$bin" run --brokers "$broker" --http "$net.$((h + 1)):8080" \
    --processes 3 --process "$h" --hostfile "$work/hosts" --cluster-secret-file "$work/cluster.secret" --workers 1 --partitions 6 \
    --idle-ms 1000 >"$work/h$h.out" 2>"$work/h$h.log" &
  pids+=($!)
done

ready() { curl -fs "http://$1:8080/readyz" >/dev/null 2>&1; }
for _ in $(seq 1 120); do
  if ready "$net.1" && ready "$net.2" && ready "$net.3"; then break; fi
  sleep 0.5
done
for h in 1 2 3; do
  ready "$net.$h" || { echo "multihost: host $net.$h never became ready" >&2; tail -30 "$work/h$((h - 1)).log" >&2; exit 1; }
done

# Every subscriber is owned by one of the three processes: the clients' streams cross hosts.
owners=$(curl -fs "http://$net.2:8080/clusters" | grep -o '"process":[0-9]*' | sort | uniq -c)
echo "multihost: subscribers per process:"; echo "$owners"
[ "$(echo "$owners" | wc -l)" = 3 ] || { echo "multihost: expected subscribers on 3 processes" >&2; exit 1; }

if ! "$bin" load --target "http://$net.2:8080" --rate 600 --duration 6 --sse-clients 9 --batch 3; then
  echo "multihost: the load run found lost or wrong windows; the hosts' logs:" >&2
  for h in 0 1 2; do echo "--- host $h" >&2; tail -20 "$work/h$h.log" >&2; done
  exit 1
fi
echo "multihost: PASSED: 3 processes on 3 hosts, every window exact on every client"
