#!/usr/bin/env bash
# Runs the functions, publishes the producer fixtures for company DEMO, shows what landed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/local-stack.sh
cargo build --release -p wa-realtime -p wa-historical -p wa-benches --bin wa-realtime --bin wa-historical --bin wa-loadgen
bin="${CARGO_TARGET_DIR:-target}/release"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export LOG_LEVEL=warn
company="${COMPANY:-DEMO}"

pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait' EXIT
for f in wa-realtime wa-historical; do
  HTTP_PORT=0 "$bin/$f" & pids+=($!)
done
# The functions create the streams; wait until they answer.
for _ in $(seq 1 100); do
  "$bin/wa-loadgen" fixtures --company "$company" && break
  sleep 0.2
done

schema="daisi_$(echo "$company" | tr '[:upper:]' '[:lower:]')"
psql_q() { psql -h 127.0.0.1 -U postgres -X -P pager=off "${DATABASE_URL##*/}" -c "$1"; }
for _ in $(seq 1 100); do
  n=$(psql -h 127.0.0.1 -U postgres -XtAc "SELECT count(*) FROM $schema.messages" "${DATABASE_URL##*/}" 2>/dev/null || echo 0)
  [ "$n" -ge 10 ] && break
  sleep 0.2
done
psql_q "SELECT chat_id, push_name, phone_number, is_group, unread_count, conversation_timestamp FROM $schema.chats ORDER BY chat_id"
psql_q "SELECT message_id, chat_id, flow, status, message_type, message_date FROM $schema.messages ORDER BY message_timestamp"
psql_q "SELECT agent_id, phone_number, push_name, status FROM $schema.contacts ORDER BY phone_number"
psql_q "SELECT agent_id, status, qr_code, host_name FROM $schema.agents"
