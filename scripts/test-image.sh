#!/usr/bin/env bash
# `just test-image`: checks the image `just image` built (IMAGE) against the local stack, with
# podman on the host network: every binary answers --help when named as the command; the image
# runs as a non-root user and ships no compiler; wa-realtime from the image, serving a fresh
# tenant (COMPANY_ID), becomes healthy and ready, writes the producer fixtures published for
# that tenant to Postgres, and on SIGTERM exits 0. Every wait polls with a deadline.
#
# Variables: IMAGE (localhost/wa-events:dev), NATS_URL (nats://127.0.0.1:4222), DATABASE_URL
# (postgres://postgres@127.0.0.1:5432/test), TEST_IMAGE_DEADLINE (seconds per wait, 90).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/image.sh
source scripts/image.sh

NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
deadline_s=${TEST_IMAGE_DEADLINE:-90}
nats_py=/var/tmp/wa-tools/nats-py
fixtures=tests/fixtures/producer
# One-shot runs without the image's healthcheck. The long-running container keeps it: the checks
# run it with `podman healthcheck run`; podman's complaints that it cannot add a systemd timer
# for it (on a machine without systemd) are left out of the output.
run_flags=("${podman_ulimits[@]}" --no-healthcheck)
no_timer_noise() { "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

passed=0
ok() {
  passed=$((passed + 1))
  echo "test-image: ok: $*"
}
fail() {
  echo "test-image: FAIL: $*" >&2
  if [ -n "${ctr:-}" ] && podman container exists "$ctr"; then
    echo "--- $ctr logs (last 40 lines) ---" >&2
    podman logs --tail 40 "$ctr" >&2 || true
  fi
  echo "$passed passed, 1 failed"
  exit 1
}
# Polls `$@` until it succeeds or the deadline passes.
eventually() {
  local what=$1
  shift
  local end=$((SECONDS + deadline_s))
  until "$@"; do
    if ((SECONDS >= end)); then
      fail "$what (not within ${deadline_s}s)"
    fi
    sleep 0.5
  done
}

ensure_tools
if ! podman image exists "$IMAGE"; then
  echo "test-image: no image $IMAGE; build it with \`just image\`" >&2
  exit 1
fi
if ! PYTHONPATH=$nats_py python3 -c 'import nats' 2>/dev/null; then
  pip install --quiet --upgrade --target "$nats_py" nats-py
fi
bash scripts/local-stack.sh >/dev/null

# The container under test (`ctr`) goes on exit, and so does the tenant's durable consumer; the
# streams stay (other processes on this NATS use them).
ctr=
consumer=
cleanup() {
  if [ -n "$ctr" ]; then
    podman rm -f -t 0 "$ctr" >/dev/null 2>&1 || true
  fi
  if [ -n "$consumer" ]; then
    PYTHONPATH=$nats_py NATS_URL=$NATS_URL CONSUMER=$consumer python3 - <<'EOF' >/dev/null 2>&1 || true
import asyncio, os, nats
async def main():
    nc = await nats.connect(os.environ["NATS_URL"])
    await nc.jetstream().delete_consumer("wa_events_stream", os.environ["CONSUMER"])
    await nc.close()
asyncio.run(main())
EOF
  fi
}
trap cleanup EXIT

# --- The image itself ---------------------------------------------------------------------------
for bin in wa-realtime wa-historical wa-dlq-retry wa-onboarding wa-bridge wa-admin; do
  out=$(podman run --rm "${run_flags[@]}" "$IMAGE" "$bin" --help 2>&1) ||
    fail "$bin --help exited non-zero: $out"
  grep -q "^Usage: $bin" <<<"$out" || fail "$bin --help printed no usage line: $out"
done
ok "every binary answers --help when named as the command"
out=$(podman run --rm "${run_flags[@]}" "$IMAGE" wa-admin --help 2>&1)
grep -q 'tenants' <<<"$out" || fail "wa-admin --help does not list its tenants command: $out"
ok "wa-admin runs from the same image"
cmd=$(podman image inspect --format '{{json .Config.Cmd}}' "$IMAGE")
[ "$cmd" = '["wa-realtime"]' ] || fail "default command is $cmd, not wa-realtime"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = 10001:10001 ] || fail "image user is '$user', not 10001:10001"
uid=$(podman run --rm "${run_flags[@]}" "$IMAGE" id -u)
[ "$uid" = 10001 ] || fail "a container runs as uid $uid"
ok "runs as uid 10001 by default; default command wa-realtime"
found=$(podman run --rm "${run_flags[@]}" "$IMAGE" sh -c \
  'for tool in cc gcc c++ ld cargo rustc; do command -v "$tool" || true; done')
[ -z "$found" ] || fail "the runtime image ships build tools: $found"
ok "no compiler, linker or cargo in the runtime image"

# As in compose.yaml: each function without HTTP_PORT, in a network of its own (no NATS there),
# passes the image's HEALTHCHECK on its default port, and `wa-healthcheck /ready` tells it is
# not ready.
for bin in wa-realtime wa-historical wa-dlq-retry wa-onboarding; do
  ctr=$(no_timer_noise podman run -d "${podman_ulimits[@]}" -e NATS_URL=nats://127.0.0.1:1 \
    -e DATABASE_URL=postgres://postgres@127.0.0.1:1/none "$IMAGE" "$bin")
  healthy() { no_timer_noise podman healthcheck run "$ctr" >/dev/null 2>&1; }
  eventually "$bin passes its HEALTHCHECK on its default port" healthy
  if podman exec "$ctr" wa-healthcheck /ready 2>/dev/null; then
    fail "$bin is ready without NATS or Postgres"
  fi
  no_timer_noise podman rm -f -t 0 "$ctr" >/dev/null
  ctr=
done
ok "each function passes the HEALTHCHECK on its default port, and is not ready without NATS"

# --- wa-realtime from the image against the local stack -----------------------------------------
tenant="IMG$(date +%s)$((RANDOM % 1000))"
schema="daisi_$(tr '[:upper:]' '[:lower:]' <<<"$tenant")"
consumer="wa_realtime_$tenant"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ctr="wa-test-image-$tenant"

# With the restrictions of deploy/k8s: read-only root filesystem (a tmpfs /tmp, as the pods' emptyDir),
# no capabilities, no privilege escalation.
no_timer_noise podman run -d --name "$ctr" --network host "${podman_ulimits[@]}" \
  --read-only --read-only-tmpfs=false --tmpfs /tmp --cap-drop=ALL --security-opt=no-new-privileges \
  -e NATS_URL="$NATS_URL" -e DATABASE_URL="$DATABASE_URL" -e COMPANY_ID="$tenant" \
  -e HTTP_PORT="$port" -e LOG_LEVEL=info "$IMAGE" >/dev/null
echo "test-image: started wa-realtime (the image's default command) for tenant $tenant, HTTP on $port," \
  "read-only root filesystem, no capabilities"

http_ok() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port$1"; }
running() { [ "$(podman inspect --format '{{.State.Running}}' "$ctr")" = true ] || fail "the container stopped"; }
health_ok() { running && http_ok /health; }
ready_ok() { running && http_ok /ready; }
eventually "/health answers 200" health_ok
ok "/health answers 200"
eventually "/ready answers 200 (Postgres and NATS reachable, consumer bound)" ready_ok
ok "/ready answers 200"
podman exec "$ctr" wa-healthcheck /ready || fail "wa-healthcheck /ready inside the container failed"
no_timer_noise podman healthcheck run "$ctr" >/dev/null || fail "the image's HEALTHCHECK reports unhealthy"
ok "the image's HEALTHCHECK (wa-healthcheck) passes inside the container"
[ "$(podman exec "$ctr" id -u)" = 10001 ] || fail "the running container is not uid 10001"
ok "the running container's user is uid 10001"
podman exec "$ctr" awk '$2 == "/" && $4 ~ /^ro(,|$)/ { ro = 1 } END { exit !ro }' /proc/mounts ||
  fail "the root filesystem is mounted read-write"
ok "the container's root filesystem is read-only"

# The realtime producer fixtures, for this tenant, through JetStream (acked publishes).
PYTHONPATH=$nats_py NATS_URL=$NATS_URL TENANT=$tenant FIXTURES=$fixtures python3 - <<'EOF' ||
import asyncio, os, nats
async def main():
    nc = await nats.connect(os.environ["NATS_URL"])
    js = nc.jetstream()
    tenant, published = os.environ["TENANT"], 0
    for base in ["v1.chats.upsert", "v1.messages.upsert", "v1.contacts.upsert", "v1.connection.update"]:
        with open(f"{os.environ['FIXTURES']}/{base}.jsonl") as f:
            for line in f:
                if line.strip():
                    body = line.strip().replace('"CMP001"', f'"{tenant}"')
                    await js.publish(f"{base}.{tenant}", body.encode(), timeout=10)
                    published += 1
    await nc.close()
    print(f"published {published} events")
asyncio.run(main())
EOF
  fail "publishing the fixtures to $NATS_URL"
ok "published the realtime producer fixtures for $tenant"

want_messages=$(python3 -c 'import json,sys; print(len({json.loads(l)["message_id"] for l in open(sys.argv[1]) if l.strip()}))' \
  "$fixtures/v1.messages.upsert.jsonl")
want_chats=$(python3 -c 'import json,sys; print(len({json.loads(l)["chat_id"] for l in open(sys.argv[1]) if l.strip()}))' \
  "$fixtures/v1.chats.upsert.jsonl")
count() { psql "$DATABASE_URL" -XtAc "SELECT count(*) FROM $schema.$1" 2>/dev/null || echo 0; }
landed() {
  running
  [ "$(count messages)" -ge "$want_messages" ] && [ "$(count chats)" -ge "$want_chats" ] &&
    [ "$(count contacts)" -ge 1 ] && [ "$(count agents)" -ge 1 ]
}
eventually "the rows landed in $schema" landed
ok "rows landed in $schema: $(count messages) messages, $(count chats) chats, $(count contacts) contacts, $(count agents) agents"

# SIGTERM (the image's stop signal); podman would send SIGKILL after 30 s.
no_timer_noise podman stop -t 30 "$ctr" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$ctr")
[ "$code" = 0 ] || fail "wa-realtime exited $code on SIGTERM, not 0"
ok "wa-realtime stopped on SIGTERM with exit code 0"

echo "test-image: $IMAGE ($(($(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000)) MB)"
echo "$passed passed, 0 failed"
