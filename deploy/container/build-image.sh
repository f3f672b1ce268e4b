#!/usr/bin/env bash
# Builds the image siamese-cluster:<version> from release binaries built on this machine, with
# nothing pulled: FROM scratch, `coordinator` and `worker` in /usr/local/bin, and the shared
# libraries `ldd` lists for them (glibc, libm, libgcc_s, the loader). For machines without a
# registry; with one, use the Dockerfile beside this script.
#
#   cargo build --release && bash deploy/container/build-image.sh [BIN_DIR]
#
# BIN_DIR defaults to $CARGO_TARGET_DIR/release, else target/release. SIAMESE_IMAGE overrides
# the tag. Podman reads deploy/container/containers.conf unless CONTAINERS_CONF names another.
# Prints the image's tag on stdout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=${1:-${CARGO_TARGET_DIR:-$repo/target}/release}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
image=${SIAMESE_IMAGE:-siamese-cluster:$version}
# Absolute: podman's helper processes read it from other folders.
CONTAINERS_CONF=$(realpath "${CONTAINERS_CONF:-$repo/deploy/container/containers.conf}")
export CONTAINERS_CONF

for b in coordinator worker; do
  [[ -x $bin_dir/$b ]] || { echo "build-image: $bin_dir/$b is missing: run cargo build --release" >&2; exit 1; }
done
command -v podman >/dev/null || { echo "build-image: podman is not installed (scripts/deploy-test-setup.sh installs it)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin"
for b in coordinator worker; do
  # Without the line tables (release builds keep them for backtraces): 16 MB instead of 95.
  if command -v strip >/dev/null; then
    strip --strip-debug -o "$ctx/rootfs/usr/local/bin/$b" "$bin_dir/$b"
  else
    cp "$bin_dir/$b" "$ctx/rootfs/usr/local/bin/$b"
  fi
  chmod 0755 "$ctx/rootfs/usr/local/bin/$b"
done
# Every library either binary loads, at the path the loader looks for it (symlinks resolved).
ldd "$bin_dir/coordinator" "$bin_dir/worker" |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' |
  sort -u |
  while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
# Writable by anyone, as /tmp is everywhere; the pods mount their volumes over other paths.
mkdir -p "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"

cat >"$ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
# The same unprivileged user the Kubernetes manifests ask for.
USER 65532:65532
LABEL org.opencontainers.image.title="siamese-cluster" \\
      org.opencontainers.image.version="$version"
CMD ["/usr/local/bin/coordinator", "--help"]
EOF
previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
podman build --quiet --tag "$image" "$ctx" >/dev/null
# The image this tag named before is left untagged: remove it unless a container still uses it.
if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$image") ]]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$image"
