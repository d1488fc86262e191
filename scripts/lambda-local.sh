#!/usr/bin/env bash
# Lambda mode on the local stack: for each function, a `cargo lambda watch --only-lambda-apis`
# Runtime API emulator, the function binary polling it, and a wa-bridge invoking it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/local-stack.sh
command -v cargo-lambda >/dev/null 2>&1 || pip install cargo-lambda
cargo build --release --workspace --bins
bin="${CARGO_TARGET_DIR:-target}/release"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local

pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait' INT TERM EXIT
port=9101
http=8091
for f in realtime historical dlq-retry onboarding; do
  cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port" >/dev/null 2>&1 & pids+=($!)
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt" AWS_LAMBDA_FUNCTION_NAME=_ \
    AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 "$bin/wa-$f" & pids+=($!)
  BRIDGE_ROUTES="$f=_" LAMBDA_ENDPOINT="http://127.0.0.1:$port" HTTP_PORT="$http" "$bin/wa-bridge" & pids+=($!)
  echo "wa-$f: Runtime API on :$port, bridge health on :$http"
  port=$((port + 1)); http=$((http + 1))
done
wait -n
