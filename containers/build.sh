#!/usr/bin/env bash
# Build mailwarden's three images with podman:
#   localhost/mailwarden:TAG        Postfix + mailwarden (policyd, milter), Containerfile
#   localhost/mailwarden-redis:TAG  redis-server for master, replica and sentinels
#   localhost/mailwarden-clamd:TAG  clamd (test signatures unless TEST_SIGNATURES=0)
# Options: --no-cache (a clean build of every layer), --base IMAGE (default localhost/debian:bookworm, made by base-image.sh when
# missing; elsewhere docker.io/library/debian:bookworm), --tag TAG (default dev),
# --rev GITREV (the tree to package, default HEAD: a clean build of what is committed,
# never a working tree's half-done edits).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/podman.env"
base=localhost/debian:bookworm tag=dev rev=HEAD nocache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --rev) rev=$2; shift 2 ;;
    --no-cache) nocache=(--no-cache); shift ;;
    *) echo "usage: $0 [--base IMAGE] [--tag TAG] [--rev GITREV]" >&2; exit 2 ;;
  esac
done
t0=$(date +%s)
if [ "$base" = localhost/debian:bookworm ]; then "$here/base-image.sh" "$base"; fi
t1=$(date +%s)

build=$here/build
rm -rf "$build"; mkdir -p "$build/src" "$build/wheels" "$build/conf/clamav"
git -C "$repo" archive "$rev" | tar -x -C "$build/src"
# The wheelhouse: mailwarden and all its dependencies, from the pip index configured
# on this machine (pymilter is compiled here, against Debian's libmilter-dev).
py=${PYTHON:-$repo/.venv/bin/python}
"$py" -m pip wheel -q --wheel-dir "$build/wheels" "$build/src[fast]" \
  'async-timeout>=4.0.3'  # redis-py needs it on Debian's Python 3.11.2 (< 3.11.3)
cp -r "$build/src/conf/profiles" "$build/conf/profiles"
cp "$build/src"/conf/clamav/*.ndb "$build/conf/clamav/" 2>/dev/null || true
t2=$(date +%s)

opts=("${nocache[@]}" --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --build-arg "BASE=$base")
podman build -q "${opts[@]}" -t "localhost/mailwarden:$tag" -f "$here/Containerfile" "$here"
podman build -q "${opts[@]}" -t "localhost/mailwarden-redis:$tag" -f "$here/redis/Containerfile" "$here"
podman build -q "${opts[@]}" -t "localhost/mailwarden-clamd:$tag" -f "$here/clamd/Containerfile" "$here"
t3=$(date +%s)
echo "images built from $rev: base $((t1 - t0))s," \
     "wheelhouse $((t2 - t1))s, images $((t3 - t2))s, total $((t3 - t0))s"
