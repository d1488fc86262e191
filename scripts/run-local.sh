#!/usr/bin/env bash
# Runs every function against the local stack until Ctrl-C; logs are pretty-printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/local-stack.sh
cargo build --release -p wa-realtime -p wa-historical -p wa-dlq-retry -p wa-onboarding
bin="${CARGO_TARGET_DIR:-target}/release"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"

pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT
for f in ${FUNCTIONS:-wa-realtime wa-historical wa-dlq-retry wa-onboarding}; do
  "$bin/$f" &
  pids+=($!)
  echo "started $f (pid $!)"
done
wait -n
