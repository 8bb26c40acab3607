#!/usr/bin/env bash
# What token checks cost: single-reaction POST /emoji requests/s with wrk, the same requests
# (each with the HS256 token of one of USERS users, cycled) against a server with tokens off,
# then on, on the embedded broker; prints both rates and their ratio. ROUNDS (default 2)
# alternates the two, to see the machine's noise.
#   bench/wrk-tokens.sh           (USERS, WRK_THREADS, WRK_CONNECTIONS, WRK_DURATION, EMOSTREAM_WORKERS)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin emostream
bin=target/release/emostream
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

head -c 32 /dev/urandom | base64 >"$work/secret"
for i in $(seq "${USERS:-1000}"); do
  "$bin" token --secret-file "$work/secret" --sub "wrk$i" --ttl-secs 3600
done >"$work/tokens"

# Starts the server with the flags given; sets $port and $server.
serve() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" run --http "127.0.0.1:$port" --workers "${EMOSTREAM_WORKERS:-1}" "$@" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && return
    sleep 0.1
  done
  echo "the server did not get ready:" >&2
  tail -20 "$work/server.log" >&2
  exit 1
}

# Runs wrk with script $1; prints its report and leaves the requests/s in $rate.
load() {
  WRK_TOKENS="$work/tokens" wrk -t "${WRK_THREADS:-1}" -c "${WRK_CONNECTIONS:-64}" \
    -d "${WRK_DURATION:-10s}" --latency -s "$1" "http://127.0.0.1:$port" | tee "$work/wrk.out"
  rate=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.out")
  # Anything but 202 would be a refused token, not a measurement.
  if grep -q 'Non-2xx' "$work/wrk.out"; then
    echo "some requests were refused; the run does not measure token checks" >&2
    exit 1
  fi
}

stop() {
  kill -TERM "$server"
  wait "$server" || true
  server=
}

summary=()
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round: tokens off"
  serve
  load bench/wrk-tokens.lua
  plain=$rate
  stop

  echo "== round $round: tokens on, HS256 (${USERS:-1000} users)"
  serve --auth-hs256-secret-file "$work/secret"
  load bench/wrk-tokens.lua
  tokens=$rate
  curl -fs "http://127.0.0.1:$port/metrics" | grep '^emostream_auth_refused_total' | grep -v ' 0$' | sed 's/^/  refused: /' || true
  stop
  summary+=("$(python3 -c "import sys; p, t = float(sys.argv[1]), float(sys.argv[2]); print(f'tokens off {p:,.0f}/s, on {t:,.0f}/s: {t / p:.2f}x')" "$plain" "$tokens")")
done
printf '%s\n' "${summary[@]}"
