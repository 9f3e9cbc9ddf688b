#!/usr/bin/env bash
# Runs the HTTP caching tests of cache-tests.fyi (npm package http-cache-tests) against a Shoal
# node in front of the suite's own origin, everything on 127.0.0.1, and compares the results
# with expected-failures.json (exit 1 on an unexpected failure). See README.md.
#
# Environment: SHOAL (the binary; default target/debug/shoal, built if missing), WORK (where the
# package is installed and results are written; default target/cache-tests).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VERSION=0.4.5
WORK=${WORK:-$ROOT/target/cache-tests}
SHOAL=${SHOAL:-$ROOT/target/debug/shoal}
export CACHE_TESTS_DIR=$WORK/node_modules/http-cache-tests

mkdir -p "$WORK"
# A package of its own, so that npm installs here and not into a package above.
[ -f "$WORK/package.json" ] || echo '{"private": true}' > "$WORK/package.json"
if ! grep -q "\"version\": \"$VERSION\"" "$CACHE_TESTS_DIR/package.json" 2>/dev/null; then
  (cd "$WORK" && npm install --no-audit --no-fund --silent "http-cache-tests@$VERSION")
fi
[ -x "$SHOAL" ] || (cd "$ROOT" && cargo build --bin shoal)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}
ORIGIN_PORT=$(free_port)
NODE_PORT=$(free_port)
ADMIN_PORT=$(free_port)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

npm_config_protocol=http npm_config_port=$ORIGIN_PORT npm_config_pidfile=$WORK/origin.pid \
  node "$HERE/loopback.mjs" > "$WORK/origin.log" 2>&1 &
PIDS+=($!)
"$SHOAL" serve --listen "127.0.0.1:$NODE_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" \
  --admin "127.0.0.1:$ADMIN_PORT" > "$WORK/shoal.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT"
wait_port "$NODE_PORT"

(cd "$CACHE_TESTS_DIR" &&
  npm_config_base="http://127.0.0.1:$NODE_PORT" npm_config_id="" npm_package_config_id="" \
    node --no-warnings cli.mjs) > "$WORK/results.json"
node "$HERE/kinds.mjs" > "$WORK/kinds.json"
python3 "$HERE/compare.py" "$WORK/results.json" "$WORK/kinds.json" "$CACHE_TESTS_DIR" \
  "$HERE/expected-failures.json"
