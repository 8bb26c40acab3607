#!/usr/bin/env bash
# Checks the running server against the OpenAPI document it serves, with Schemathesis.
#
#   tests/openapi/run-schemathesis.sh [BASE_URL] [MAX_SECONDS]
#
# BASE_URL defaults to http://127.0.0.1:8080 (start one with `emostream run`); MAX_SECONDS (default
# 120) bounds the run: Schemathesis stops generating at it, and the whole run is stopped (and
# fails) 60 s after it. Every operation is tested except the event stream (SSE), which never
# ends, and the WebSocket, which needs an upgrade. Checks: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance. Exits non-zero on any failure.
#
# Environment:
#   EMOSTREAM_SCHEMATHESIS_EXAMPLES  test cases per operation and phase (default 50)
#   EMOSTREAM_SCHEMATHESIS_SEED      a seed, to repeat a run
#   EMOSTREAM_SCHEMATHESIS_TOKEN     a JWT to send as `Authorization: Bearer` (servers with tokens on)
#   PYTHON                           the interpreter the venv is made with (default python3; schemathesis 4.32 needs >= 3.11)
set -euo pipefail

BASE="${1:-http://127.0.0.1:8080}"
BASE="${BASE%/}"
MAX_SECONDS="${2:-120}"
EXAMPLES="${EMOSTREAM_SCHEMATHESIS_EXAMPLES:-50}"
SCHEMATHESIS_VERSION="4.32.5"

case "$MAX_SECONDS" in
'' | *[!0-9]* | 0)
	echo "MAX_SECONDS must be a positive integer, not '$MAX_SECONDS'" >&2
	exit 2
	;;
esac

VENV="${XDG_CACHE_HOME:-$HOME/.cache}/emostream/schemathesis-venv"
if [[ ! -x "$VENV/bin/schemathesis" ]] ||
	[[ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != *" $SCHEMATHESIS_VERSION" ]]; then
	echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
	mkdir -p "$(dirname "$VENV")"
	"${PYTHON:-python3}" -m venv "$VENV"
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
		"schemathesis==$SCHEMATHESIS_VERSION"
fi

# The server answers /readyz 200 once the broker and the dataflow run; before, answers would be
# 503s that say nothing about the document.
echo "waiting for $BASE/readyz" >&2
"$VENV/bin/python" - "$BASE/readyz" <<'EOF'
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                break
    except (urllib.error.URLError, OSError):
        pass
    if time.monotonic() > deadline:
        sys.exit(f"{url} did not answer 200 within 60 s: is `emostream run` up?")
    time.sleep(0.5)
EOF

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Schemathesis has no serializer for NDJSON batches: one that sends the generated text as is
# (and a generated list as one JSON value per line).
cat >"$WORK/hooks.py" <<'EOF'
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return "".join(json.dumps(item) + "\n" for item in value).encode("utf-8")
    return (json.dumps(value) + "\n").encode("utf-8")
EOF

args=(
	run "$BASE/openapi.json"
	--url "$BASE"
	--checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
	--exclude-path-regex '/(events|ws)$'
	--max-examples "$EXAMPLES"
	--max-time "$MAX_SECONDS"
	--wait-for-schema 30
	--request-timeout 10
	--workers 1
	--generation-database none
	--no-color
)
if [[ -n "${EMOSTREAM_SCHEMATHESIS_SEED:-}" ]]; then
	args+=(--seed "$EMOSTREAM_SCHEMATHESIS_SEED")
fi
if [[ -n "${EMOSTREAM_SCHEMATHESIS_TOKEN:-}" ]]; then
	args+=(--header "Authorization: Bearer $EMOSTREAM_SCHEMATHESIS_TOKEN")
fi

cd "$WORK"
SCHEMATHESIS_HOOKS="$WORK/hooks.py" timeout --signal=INT --kill-after=10 "$((MAX_SECONDS + 60))" \
	"$VENV/bin/schemathesis" "${args[@]}"
