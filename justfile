# WA Events Processor — common tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", "/var/tmp/wa-events-target")

default:
    @just --list

# Start NATS + Postgres if they are not running (Docker compose, or the local binaries).
stack:
    bash scripts/local-stack.sh

# The whole test suite: formatting, lints, unit, store and end-to-end tests.
test: stack
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# Format the code.
fmt:
    cargo fmt --all
