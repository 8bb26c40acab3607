#!/usr/bin/env bash
# Live end to end on a fresh broker: N processes × W workers (default 2 × 1) of
# target/release/emostream on loopback, loaded by `emostream load` (batches, SSE clients on every
# process's subscribers), which prints the rates, the latencies and the exactness check. The
# broker is Apache Kafka 4.4 (tests/kafka/start.sh); BROKER=tansu uses tansu from the PATH.
#
#   bench/live-processes.sh [PROCESSES] [WORKERS] [load flags...]
#   e.g. bench/live-processes.sh 2 1 --rate 200000 --batch 100 --duration 20 --sse-clients 100
set -euo pipefail
cd "$(dirname "$0")/.."
processes=${1:-2}
workers=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
bin=target/release/emostream
[ -x "$bin" ] || { echo "build first: cargo build --release --bin emostream" >&2; exit 1; }
broker=${BROKER:-kafka}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$broker" = kafka ] && bash tests/kafka/start.sh stop "$work/kafka" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case $broker in
  kafka) kafka=$(bash tests/kafka/start.sh start "$work/kafka") ;;
  tansu)
    command -v tansu >/dev/null || { echo "needs tansu: cargo install tansu --locked --features dynostore" >&2; exit 1; }
    kafka=127.0.0.1:$(port)
    tansu broker --listener-url "tcp://$kafka" --advertised-listener-url "tcp://$kafka" \
      --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
    pids+=($!)
    ;;
  *) echo "BROKER is kafka (the default) or tansu, not $broker" >&2; exit 1 ;;
esac
https=()
head -c 32 /dev/urandom | base64 >"$work/cluster.secret"
for p in $(seq 0 $((processes - 1))); do
  https+=("127.0.0.1:$(port)")
  echo "127.0.0.1:$(port) http://${https[$p]}" >>"$work/hosts"
done
for p in $(seq 0 $((processes - 1))); do
  "$bin" run --brokers "$kafka" --http "${https[$p]}" --processes "$processes" --process "$p" \
    --hostfile "$work/hosts" --cluster-secret-file "$work/cluster.secret" --workers "$workers" --partitions 8 >/dev/null 2>"$work/p$p.log" &
  pids+=($!)
done
for h in "${https[@]}"; do
  for _ in $(seq 1 120); do curl -fs "http://$h/readyz" >/dev/null && break; sleep 0.5; done
done
echo "$processes processes × $workers workers on $broker ($kafka); load sent to process 0"
"$bin" load --target "http://${https[0]}" "$@"
