# WA Events Processor — common tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", "/var/tmp/wa-events-target")

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

# Install the test tools beyond cargo when missing: cargo-lambda and cfn-lint (from PyPI).
tools:
    command -v cargo-lambda >/dev/null 2>&1 || pip install --quiet cargo-lambda
    command -v cfn-lint >/dev/null 2>&1 || pip install --quiet cfn-lint

# The whole test suite: formatting, lints, unit, store and end-to-end tests.
test: stack tools reset-test-db
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cfn-lint template.yaml
    cargo test -p wa-benches --bench handlers
    just bench-e2e-smoke
    cargo build --workspace --bins
    cargo test --workspace

# Criterion micro benchmarks: decode + validate + map per event type, with allocs/op.
bench *ARGS:
    cargo bench -p wa-benches --bench handlers -- {{ARGS}}

# Every micro benchmark once (a smoke check; part of `just test`).
bench-smoke:
    cargo test -p wa-benches --bench handlers

# It DROPS and recreates database `wa_bench` and DELETES and recreates the product streams on the
# local NATS; writes target/bench-report/ (e2e.md, e2e.json, e2e-throughput.png); `--help` lists flags.
# End-to-end benchmark (release builds): the functions against the local stack next to raw limits.
bench-e2e *ARGS: stack
    cargo build --release -p wa-realtime -p wa-historical -p wa-benches --bins
    "$CARGO_TARGET_DIR/release/wa-bench-e2e" {{ARGS}}

# Resets the same database and streams as bench-e2e; reports to target/bench-report/smoke/.
# The end-to-end benchmark at tiny sizes with debug builds (a check that it still runs; in `just test`).
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
