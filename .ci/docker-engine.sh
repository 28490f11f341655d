#!/usr/bin/env bash
# A real Docker engine for the docker-marked tests (run by .ci/run under CI=true).
# No image registry is reachable here: Debian's docker.io and busybox-static come from apt,
# dockerd runs without iptables or a bridge (containers get network "none" unless a task
# asks), and the test image is imported from a rootfs holding busybox.
# Usage: .ci/docker-engine.sh [IMAGE]   (default hive-test/busybox:1, what tests/e2e/test_docker.py uses)
set -euo pipefail
image=${1:-hive-test/busybox:1}
log=${DOCKERD_LOG:-/tmp/dockerd.log}

if ! command -v dockerd >/dev/null || [ ! -x /bin/busybox ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q docker.io busybox-static >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  # setsid: dockerd outlives this script and is not in the CI job's process group
  (setsid dockerd --iptables=false --bridge=none >"$log" 2>&1 &)
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
if ! docker info >/dev/null 2>&1; then
  echo "error: dockerd did not come up within 60s; its log is $log:" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
  root=$(mktemp -d)
  trap 'rm -rf "$root" "$root.tar"' EXIT
  mkdir -p "$root/bin" "$root/tmp" "$root/workspace"
  chmod 1777 "$root/tmp"  # tasks run as the node's uid, not root
  cp /bin/busybox "$root/bin/"
  for c in sh echo cat ls sleep true false head tail dd tr wc mkdir rm cp env id; do
    ln -sf busybox "$root/bin/$c"
  done
  tar -C "$root" -cf "$root.tar" .
  docker import "$root.tar" "$image" >/dev/null
fi

docker run --rm --network none "$image" sh -c true
echo "docker engine ready; local image $image"
