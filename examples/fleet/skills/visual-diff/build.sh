#!/bin/sh
# The build step (cutover.toml: build = "sh build.sh"). cutover runs it in the release snapshot,
# .cutover/releases/<service>/<release>/; it vendors the project's shared/palette.py into the
# release, so a running release never reads the working tree, then byte-compiles everything.
set -eu
root=$PWD
until [ -f "$root/cutover.toml" ]; do
  if [ "$root" = / ]; then
    echo "build.sh: no cutover.toml in $PWD or above it" >&2
    exit 1
  fi
  root=$(dirname "$root")
done
cp "$root/shared/palette.py" .
python3 -m compileall -q .
