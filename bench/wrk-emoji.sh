#!/usr/bin/env bash
# Single-reaction POST /emoji requests/s with wrk, against `emostream run` on the embedded broker.
#   bench/wrk-emoji.sh            (WRK_THREADS, WRK_CONNECTIONS, WRK_DURATION, EMOSTREAM_WORKERS to tune)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin emostream
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/emostream run --http "127.0.0.1:$port" --workers "${EMOSTREAM_WORKERS:-1}" >/tmp/emostream-wrk.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "the server did not get ready; see /tmp/emostream-wrk.log" >&2; exit 1; }
wrk -t "${WRK_THREADS:-1}" -c "${WRK_CONNECTIONS:-64}" -d "${WRK_DURATION:-10s}" --latency \
  -s bench/wrk-emoji.lua "http://127.0.0.1:$port"
echo "server counters after the run:"
grep -c "window closed" /tmp/emostream-wrk.log | sed 's/^/  windows logged: /'
