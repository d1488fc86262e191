#!/usr/bin/env bash
# Builds and runs the cargo-fuzz targets of fuzz/ (see the README's "Fuzzing").
#
#   fuzz/fuzz.sh run SECONDS [TARGET...]   each target (default: all) for SECONDS, one after
#                                          another, on its corpus fuzz/corpus/<target>/; prints
#                                          runs, exec/s and corpus size per target; exits non-zero
#                                          after the last target if any failed
#   fuzz/fuzz.sh repro TARGET FILE         runs TARGET once on FILE (a crash artifact)
#
# A failure is a panic (a broken invariant), a timeout or an out-of-memory: libFuzzer saves the
# input under fuzz/artifacts/<target>/. A target stops at its first failure, unless
# FUZZ_KEEP_GOING=1: then libFuzzer's fork mode carries on for the whole time and keeps every
# failing input, and each is listed with its panic at the end.
#
# Toolchain: `cargo +nightly fuzz` when rustup has a nightly toolchain, else the default
# toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only flags); FUZZ_TOOLCHAIN=nightly
# or stable forces one. FUZZ_SANITIZER (default none: the library forbids unsafe code, the
# targets look for panics and broken invariants, and AddressSanitizer costs executions) is passed
# to `cargo fuzz -s`. The build goes to FUZZ_TARGET_DIR (/var/tmp/wa-fuzz-target),
# never to the workspace's target directory: its fuzzing flags would rebuild everything there.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_dir=fuzz
target_dir="${FUZZ_TARGET_DIR:-/var/tmp/wa-fuzz-target}"
export CARGO_TARGET_DIR="$target_dir"
sanitizer="${FUZZ_SANITIZER:-none}"
keep_going="${FUZZ_KEEP_GOING:-0}"
logs="$target_dir/logs"
mkdir -p "$logs"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed: run \`just tools\` (cargo install cargo-fuzz --locked)" >&2
  exit 1
fi

toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=nightly; else toolchain=stable; fi
fi
case "$toolchain" in
  nightly)
    cargo_fuzz=(cargo +nightly fuzz)
    describe="$(rustc +nightly --version)"
    host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
    ;;
  stable)
    export RUSTC_BOOTSTRAP=1
    cargo_fuzz=(cargo fuzz)
    describe="$(rustc --version) with RUSTC_BOOTSTRAP=1"
    host="$(rustc -vV | sed -n 's/^host: //p')"
    ;;
  *) echo "fuzz: FUZZ_TOOLCHAIN must be nightly or stable, not $toolchain" >&2; exit 1 ;;
esac
flags=(--fuzz-dir "$fuzz_dir" --target-dir "$target_dir" -s "$sanitizer")
# Where cargo fuzz puts a target's binary (it builds in release mode for the host by default).
binary() { echo "$target_dir/$host/release/$1"; }

# Builds one target, or all of them.
build() {
  echo "fuzz: building ${1:-every target} with $describe, sanitizer $sanitizer, into $target_dir"
  if ! "${cargo_fuzz[@]}" build "${flags[@]}" "$@"; then
    echo "fuzz: the fuzz targets do not build with $describe." >&2
    if [ "$toolchain" = stable ]; then
      echo "fuzz: cargo-fuzz needs nightly compiler flags; install a nightly toolchain" \
        "(rustup toolchain install nightly) or fix the build above." >&2
    fi
    exit 1
  fi
}

artifacts_of() { find "$fuzz_dir/artifacts/$1" -type f 2>/dev/null | sort || true; }

# What a failing input does: the panic message (or libFuzzer's verdict), from a run on it alone.
verdict() {
  local out
  out="$(timeout 60 "$(binary "$1")" -timeout=10 "$2" 2>&1 || true)"
  if grep -q 'panicked at' <<<"$out"; then
    sed -n '/panicked at/,/^stack backtrace:\|^note: run with/p' <<<"$out" | grep -v '^stack backtrace:\|^note: run with' | head -12
  else
    grep -E '^==[0-9]+== ERROR|^SUMMARY' <<<"$out" | head -3 || echo "(no failure when run alone)"
  fi
}

report_failure() {
  local target="$1" log="$2"
  shift 2
  echo "fuzz: $target FAILED (libFuzzer log: $log)" >&2
  if [ $# -eq 0 ]; then
    tail -20 "$log" >&2
    return
  fi
  echo "fuzz: $# failing input(s) saved under $fuzz_dir/artifacts/$target/:" >&2
  local artifact
  for artifact in "${@:1:10}"; do
    echo "--- $artifact ($(wc -c <"$artifact") bytes)" >&2
    verdict "$target" "$artifact" | sed 's/^/    /' >&2
  done
  [ $# -le 10 ] || echo "--- and $(($# - 10)) more" >&2
  echo "fuzz: the first one, base64 (up to 4 KiB): $(base64 -w0 "$1" | head -c 4096)" >&2
  echo "fuzz: reproduce with: just fuzz-repro $target $1" >&2
}

stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

run() {
  local seconds="$1"
  shift
  local targets=("$@") failed=() summary=()
  [ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
  if [ ${#targets[@]} -eq 1 ]; then build "${targets[0]}"; else build; fi
  local mode=(-print_final_stats=1)
  [ "$keep_going" = 1 ] && mode=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  for target in "${targets[@]}"; do
    local corpus="$fuzz_dir/corpus/$target" log="$logs/$target.log" status=ok before new
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$target"
    before="$(find "$corpus" -type f | wc -l)"
    local old_artifacts
    old_artifacts="$(artifacts_of "$target")"
    echo "fuzz: $target for ${seconds}s on $corpus ($before inputs)"
    local rc=0
    "${cargo_fuzz[@]}" run "${flags[@]}" "$target" "$corpus" -- \
      -max_total_time="$seconds" -timeout=10 -dict="$fuzz_dir/json.dict" "${mode[@]}" \
      >"$log" 2>&1 || rc=$?
    mapfile -t new < <(comm -13 <(echo "$old_artifacts") <(artifacts_of "$target") | grep . || true)
    if [ "$rc" -ne 0 ] || [ ${#new[@]} -gt 0 ]; then
      status=FAILED
      failed+=("$target")
      report_failure "$target" "$log" "${new[@]}"
    fi
    local runs rate inputs bytes cov
    # Without final stats (fork mode, or a stop on a failure) the last status line has the runs.
    runs="$(stat number_of_executed_units "$log")"
    [ -n "$runs" ] || runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)"
    rate="$(stat average_exec_per_sec "$log")"
    [ -n "$rate" ] || [ -z "$runs" ] || rate="$((runs / seconds))"
    inputs="$(find "$corpus" -type f | wc -l)"
    bytes="$(find "$corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1024 }')"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)"
    summary+=("$(printf '%-15s %-6s %10s runs %7s exec/s  corpus %5s inputs (%s KiB, %+d)  %s' \
      "$target" "$status" "${runs:-?}" "${rate:--}" "$inputs" "$bytes" "$((inputs - before))" "$cov")")
  done
  echo "fuzz: ${seconds}s per target, $describe, sanitizer $sanitizer; libFuzzer logs in $logs"
  printf '  %s\n' "${summary[@]}"
  if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}: failing inputs under $fuzz_dir/artifacts/<target>/ (see above)" >&2
    exit 1
  fi
}

repro() {
  local target="${1:?usage: fuzz/fuzz.sh repro TARGET FILE}" input="${2:?usage: fuzz/fuzz.sh repro TARGET FILE}"
  build "$target"
  RUST_BACKTRACE="${RUST_BACKTRACE:-1}" "${cargo_fuzz[@]}" run "${flags[@]}" "$target" "$input"
}

case "${1:-}" in
  run) shift; run "${1:?usage: fuzz/fuzz.sh run SECONDS [TARGET...]}" "${@:2}" ;;
  repro) shift; repro "$@" ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
