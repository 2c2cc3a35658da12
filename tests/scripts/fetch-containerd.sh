#!/usr/bin/env bash
# Fetches containerd 1.7 (trixie) and 2.1 (sid) as Debian packages and unpacks them under
# $AMPHI_CONTAINERD_DIR (default: .cache/containerd) without installing them over the system.
# containerd 1.6 is bookworm's own package (`apt-get install containerd`).
# Usage: tests/scripts/fetch-containerd.sh   -> prints nothing, leaves DIR/{1.7,2.1}/usr/bin/containerd
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dest=${AMPHI_CONTAINERD_DIR:-$top/.cache/containerd}
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$dest"
fetch() { # suite label
  local suite=$1 label=$2
  local work="$dest/apt-$suite"
  [ -x "$dest/$label/usr/bin/containerd" ] && return 0
  mkdir -p "$work/lists/partial" "$work/archives"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$work/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$work/lists" -o Debug::NoLocking=1)
  apt-get "${opts[@]}" update -qq
  (cd "$work/archives" && rm -f containerd_*.deb && apt-get "${opts[@]}" download containerd >/dev/null)
  rm -rf "$dest/$label.tmp" && mkdir -p "$dest/$label.tmp"
  dpkg -x "$work"/archives/containerd_*.deb "$dest/$label.tmp"
  rm -rf "$dest/$label" && mv "$dest/$label.tmp" "$dest/$label"
}
fetch trixie 1.7
fetch sid 2.1
