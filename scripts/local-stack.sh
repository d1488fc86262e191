#!/usr/bin/env bash
# Makes sure NATS (with JetStream) and Postgres answer on their default local ports.
# Uses Docker compose where a Docker engine runs, otherwise the machine's own binaries,
# started the same way the development machines start them.
set -euo pipefail

compose=(docker compose -f "$(dirname "$0")/../compose.yaml")
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
# pg_isready and psql from the host when it has them; with Docker only, from the container.
pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null
  elif [ -n "${use_docker:-}" ]; then
    "${compose[@]}" exec -T postgres pg_isready -q -U postgres 2>/dev/null
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}
sql() {
  if command -v psql >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -X "$@" postgres
  else
    "${compose[@]}" exec -T postgres psql -U postgres -X "$@" postgres
  fi
}
wait_for() {
  local what=$1 check=$2
  for _ in $(seq 1 120); do
    if $check; then return 0; fi
    sleep 0.5
  done
  echo "local-stack: $what did not come up" >&2
  return 1
}

if nats_up && pg_up; then
  :
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  # Only the servers: compose.yaml also runs the functions (`docker compose up --wait`).
  use_docker=1
  "${compose[@]}" up -d --wait nats postgres
else
  if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    else
      echo "local-stack: Postgres is not running and neither Docker nor pg_ctlcluster is available" >&2
      exit 1
    fi
  fi
  if ! nats_up; then
    if ! command -v nats-server >/dev/null 2>&1; then
      echo "local-stack: NATS is not running and neither Docker nor nats-server is available (Debian: apt-get install nats-server)" >&2
      exit 1
    fi
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  fi
fi
wait_for Postgres pg_up
wait_for NATS nats_up

# The test database.
if ! sql -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
  sql -c "CREATE DATABASE test" >/dev/null
fi
echo "local stack: Postgres on 127.0.0.1:5432, NATS on 127.0.0.1:4222"
