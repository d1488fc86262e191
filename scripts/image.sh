#!/usr/bin/env bash
# `just image`: builds the root Dockerfile with podman, without a container registry. The base
# images are made here and kept in podman's storage (made once, reused by later runs):
#   wa-debian:bookworm-slim   Debian bookworm (debootstrap minbase from the machine's Debian mirror),
#                             slimmed like debian:bookworm-slim: the runtime base
#   wa-rust:<version>-bookworm  that plus gcc, libc headers and this machine's Rust toolchain
#                             (no toolchain download): the build base
# The cargo registry and target directory are the Dockerfile's cache mounts, which podman keeps
# between builds, so a rebuild compiles only what changed.
#
# Variables: IMAGE (localhost/wa-events:dev), DEBIAN_MIRROR (from /etc/apt/sources.list*),
# PODMAN_RUNTIME (runc), CARGO_FEATURES (passed to the build).
#
# Sourced by scripts/test-image.sh for `podman` (with the flags this machine needs) and the names.
set -euo pipefail

IMAGE=${IMAGE:-localhost/wa-events:dev}
SUITE=bookworm
RUNTIME_BASE_IMAGE=localhost/wa-debian:$SUITE-slim
IMAGE_WORK=${IMAGE_WORK:-/var/tmp/wa-image}

# runc rather than crun: crun 1.8 refuses hosts with cgroup v1 and v2 mounted together
# (a "hybrid" layout). The ulimits are set below the host's: a container without
# CAP_SYS_RESOURCE in its parent cannot be given the podman defaults (1048576 files).
PODMAN_RUNTIME=${PODMAN_RUNTIME:-runc}
limit() { if [ "$1" = unlimited ]; then echo 1048576; else echo "$1"; fi; }
podman_ulimits=(--ulimit "nofile=$(limit "$(ulimit -n)"):$(limit "$(ulimit -Hn)")" --ulimit nproc=32768:32768)
podman() { command podman --runtime "$PODMAN_RUNTIME" "$@"; }

log() { echo "image: $*" >&2; }

ensure_tools() {
  local missing=()
  for tool in podman buildah debootstrap "$PODMAN_RUNTIME"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

# The machine's Debian mirror (deb822 "URIs:" or one-line "deb" entries), else Debian's own.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local url
  url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  echo "${url:-http://deb.debian.org/debian}"
}

# Debian bookworm minbase, with the dpkg and apt settings of Debian's slim images (no manuals,
# documentation or translations; no package cache), imported as a one-layer image.
make_runtime_base() {
  if podman image exists "$RUNTIME_BASE_IMAGE"; then
    return
  fi
  local mirror rootfs=$IMAGE_WORK/rootfs-$SUITE
  mirror=$(debian_mirror)
  mirror=${mirror%/}
  if [ ! -e "$rootfs/.complete" ]; then
    log "debootstrap $SUITE (minbase) from $mirror into $rootfs"
    rm -rf "$rootfs"
    mkdir -p "$IMAGE_WORK"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$IMAGE_WORK/debootstrap.log" 2>&1 || {
      tail -n 20 "$IMAGE_WORK/debootstrap.log" >&2
      exit 1
    }
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb ${mirror%/debian}/debian-security $SUITE-security main
EOF
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/* \
      "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
      "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
    touch "$rootfs/.complete"
  fi
  log "importing $rootfs as $RUNTIME_BASE_IMAGE"
  tar --exclude=./.complete -C "$rootfs" -c . |
    podman import --change 'CMD ["bash"]' - "$RUNTIME_BASE_IMAGE" >/dev/null
}

# The runtime base plus gcc and libc headers (ring's C code), this machine's Rust toolchain
# (bin, lib, libexec of `rustc --print sysroot`) with CARGO_HOME=/usr/local/cargo as in the
# official rust image, and the machine's extra CA certificates (to reach crates.io as it does).
make_build_base() {
  local sysroot version
  sysroot=$(rustc --print sysroot)
  version=$(rustc --version | awk '{print $2}')
  BUILD_BASE_IMAGE=localhost/wa-rust:$version-$SUITE
  if podman image exists "$BUILD_BASE_IMAGE"; then
    return
  fi
  log "making $BUILD_BASE_IMAGE (Rust $version from $sysroot)"
  local ctr mnt
  ctr=$(buildah from --pull=never "$RUNTIME_BASE_IMAGE")
  # shellcheck disable=SC2064
  trap "buildah rm $ctr >/dev/null 2>&1 || true" RETURN
  buildah run --runtime "$PODMAN_RUNTIME" --network host "$ctr" -- sh -c \
    'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
  mnt=$(buildah mount "$ctr")
  mkdir -p "$mnt/usr/local/rust" "$mnt/usr/local/cargo"
  cp -a "$sysroot"/{bin,lib,libexec,etc} "$mnt/usr/local/rust/"
  # The machine's own CA certificates, for a network whose TLS goes through an inspecting proxy.
  local local_cas=(/usr/local/share/ca-certificates/*.crt)
  if [ -e "${local_cas[0]}" ]; then
    cp "${local_cas[@]}" "$mnt/usr/local/share/ca-certificates/"
  fi
  buildah umount "$ctr" >/dev/null
  buildah run --runtime "$PODMAN_RUNTIME" --network host "$ctr" -- update-ca-certificates >/dev/null
  buildah config --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' "$ctr"
  buildah commit --quiet "$ctr" "$BUILD_BASE_IMAGE" >/dev/null
}

build_image() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  log "building $IMAGE from $root/Dockerfile (build base $BUILD_BASE_IMAGE)"
  # Docker image format: the OCI format has no HEALTHCHECK. Host network: the build fetches
  # crates and Debian packages, and the machine may have no container network.
  podman build --format docker --network host --pull=never "${podman_ulimits[@]}" \
    --build-arg "BUILD_BASE=$BUILD_BASE_IMAGE" --build-arg "RUNTIME_BASE=$RUNTIME_BASE_IMAGE" \
    --build-arg "CARGO_FEATURES=${CARGO_FEATURES:-}" \
    -f "$root/Dockerfile" -t "$IMAGE" "$root"
  # The previous builds' untagged images (each holds a build stage of about 1 GB); the cargo
  # caches are mounts, not layers, so they stay.
  podman image prune -f >/dev/null
  local size
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
  log "$IMAGE: $((size / 1000000)) MB ($size bytes)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  ensure_tools
  make_runtime_base
  make_build_base
  build_image
fi
