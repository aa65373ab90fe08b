#!/usr/bin/env bash
# Fetch the GPL torcs-data Debian package (3D car models) into a cache outside git.
# Usage: scripts/fetch_torcs.sh [DEST]   (default: $CARSEARCH_TORCS_DIR or ~/.cache/carsearch/torcs)
# Idempotent: returns at once when the cars are already extracted. Never fails the caller:
# when apt-get is unavailable or the download fails it prints one line and exits 0.
set -u
DEST="${1:-${CARSEARCH_TORCS_DIR:-$HOME/.cache/carsearch/torcs}}"
CARS="$DEST/usr/share/games/torcs/cars"
if [ -f "$DEST/.complete" ] && [ -d "$CARS" ]; then
  echo "torcs-data already present in $DEST"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "fetch_torcs: apt-get/dpkg-deb unavailable; skipping torcs-data (pipeline falls back to the demo set)"
  exit 0
fi
mkdir -p "$DEST" || { echo "fetch_torcs: cannot create $DEST; skipping torcs-data"; exit 0; }
TMP="$(mktemp -d "$DEST/.dl.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
if ! (cd "$TMP" && apt-get download torcs-data >/dev/null 2>&1); then
  # package lists may be missing on a fresh machine; one refresh attempt when we are root
  if [ "$(id -u)" = 0 ] && apt-get update >/dev/null 2>&1 && (cd "$TMP" && apt-get download torcs-data >/dev/null 2>&1); then
    :
  else
    echo "fetch_torcs: 'apt-get download torcs-data' failed; skipping torcs-data (pipeline falls back to the demo set)"
    exit 0
  fi
fi
DEB="$(ls "$TMP"/torcs-data_*.deb 2>/dev/null | head -n1)"
mkdir -p "$TMP/x"
# extract only the car models and the licence files (the whole package is ~500 MB unpacked)
if [ -z "$DEB" ] || ! (dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$TMP/x" ./usr/share/games/torcs/cars ./usr/share/doc/torcs-data) >/dev/null 2>&1 \
   || [ ! -d "$TMP/x/usr/share/games/torcs/cars" ]; then
  echo "fetch_torcs: could not extract torcs-data; skipping torcs-data (pipeline falls back to the demo set)"
  exit 0
fi
rm -rf "$DEST/usr"
mkdir -p "$DEST/usr/share/games/torcs" "$DEST/usr/share/doc"
mv "$TMP/x/usr/share/games/torcs/cars" "$DEST/usr/share/games/torcs/cars"
[ -d "$TMP/x/usr/share/doc/torcs-data" ] && mv "$TMP/x/usr/share/doc/torcs-data" "$DEST/usr/share/doc/torcs-data"
basename "$DEB" > "$DEST/.complete"
echo "torcs-data extracted to $DEST ($(ls "$CARS" | wc -l) car folders)"
