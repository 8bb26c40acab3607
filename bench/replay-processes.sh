#!/usr/bin/env bash
# Replay one file on 1 process × 1 worker, 1 × 2 and 2 processes × 1 worker (timely's cluster
# mode over loopback), best of 3 runs each, and check the outputs are byte-identical.
#
#   bench/replay-processes.sh FILE [RUNS]     (build first: cargo build --release --bin emostream)
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:?usage: bench/replay-processes.sh FILE [RUNS]}
runs=${2:-3}
bin=target/release/emostream
[ -x "$bin" ] || { echo "build first: cargo build --release --bin emostream" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

now() { date +%s.%N; }
best() { sort -n | head -1; }

one() { # workers
  "$bin" replay "$file" --workers "$1" >"$work/out-1x$1" 2>/dev/null
}
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(port)" "$(port)" >"$work/hosts"
two() { # 2 processes × 1 worker
  "$bin" replay "$file" --workers 1 --processes 2 --process 1 --hostfile "$work/hosts" >/dev/null 2>&1 &
  local other=$!
  "$bin" replay "$file" --workers 1 --processes 2 --process 0 --hostfile "$work/hosts" >"$work/out-2x1" 2>/dev/null
  wait $other
}

lines=$(wc -l <"$file")
printf '%s: %s reactions, best of %s runs\n' "$file" "$lines" "$runs"
for setup in "1x1:one 1" "1x2:one 2" "2x1:two"; do
  name=${setup%%:*}
  cmd=${setup#*:}
  times=()
  for _ in $(seq 1 "$runs"); do
    start=$(now)
    $cmd
    times+=("$(echo "$(now) - $start" | bc -l)")
  done
  t=$(printf '%s\n' "${times[@]}" | best)
  printf '%-4s processes × workers: %6.3f s  %6.2f M reactions/s\n' "$name" "$t" "$(echo "$lines / $t / 1000000" | bc -l)"
done
cmp -s "$work/out-1x1" "$work/out-1x2" && cmp -s "$work/out-1x1" "$work/out-2x1" \
  && echo "outputs: byte-identical" || { echo "outputs differ" >&2; exit 1; }
