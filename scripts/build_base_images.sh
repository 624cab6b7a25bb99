#!/usr/bin/env bash
# Build local stand-ins for python:<version>-slim where no registry can be reached,
# and print the variables that point the docker tier at them.
#
#   scripts/build_base_images.sh 3.12 3.13      # default: 3.11 3.12 3.13
#
# 3.11 and 3.13 are Debian's own Python (bookworm and trixie, minimal debootstrap).
# 3.12 grafts this machine's pyenv build onto bookworm, at the same absolute path (its
# binary links libpython by that path), linked from /usr/local/bin as in the official
# slim images. Images are tagged mlpipe-base:<version>; an existing one is kept.
# Needs root, debootstrap, a running Docker engine and a Debian mirror.
set -euo pipefail

DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYENV_312=${PYENV_312:-/root/.pyenv/versions/3.12.1}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rootfs() {  # rootfs SUITE DIR
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$1" "$2" "$MIRROR" > "$work/$1.log" \
    || { tail -n 20 "$work/$1.log"; exit 1; }
  # TLS to the package registries may go through a proxy whose CA only this machine trusts.
  cp "$CA_BUNDLE" "$2$CA_BUNDLE"
  rm -rf "$2"/var/cache/apt/archives/*.deb "$2"/var/lib/apt/lists/*
}

import() {  # import DIR TAG
  tar -C "$1" -c . | "$DOCKER" import \
    --change "ENV PIP_CERT=$CA_BUNDLE" \
    --change "ENV SSL_CERT_FILE=$CA_BUNDLE" \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'CMD ["python3"]' \
    - "$2" > /dev/null
}

build() {  # build VERSION
  local version=$1 tag="mlpipe-base:$1" dir="$work/$1"
  if "$DOCKER" image inspect "$tag" > /dev/null 2>&1; then
    return
  fi
  case "$version" in
    3.11) rootfs bookworm "$dir" ;;
    3.13) rootfs trixie "$dir" ;;
    3.12)
      rootfs bookworm "$dir"
      mkdir -p "$dir$PYENV_312"
      tar -C "$PYENV_312" -c --exclude='lib/python3.12/test' --exclude='*.a' --exclude='__pycache__' \
        --exclude='_sandboxing_*' . | tar -C "$dir$PYENV_312" -x
      chmod 755 "$dir/root"
      for name in python3.12 python3 python; do
        ln -sf "$PYENV_312/bin/python3.12" "$dir/usr/local/bin/$name"
      done
      for name in pip3.12 pip3 pip; do
        ln -sf "$PYENV_312/bin/pip3.12" "$dir/usr/local/bin/$name"
      done
      ;;
    *) echo "No recipe for Python $version" >&2; exit 1 ;;
  esac
  import "$dir" "$tag"
  "$DOCKER" run --rm --network host "$tag" python3 -c "import sys, ssl, venv; assert sys.version.startswith('$version')"
}

for version in "${@:-3.11 3.12 3.13}"; do
  for v in $version; do
    build "$v"
    echo "MLPIPE_TEST_BASE_IMAGE_${v/./_}=mlpipe-base:$v"
  done
done
