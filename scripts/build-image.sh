#!/usr/bin/env bash
# Builds the stackpilot container image from binaries this machine already has, without any
# image registry: compose/Dockerfile's `prebuilt` target, FROM scratch, holding
#   /stackpilot                                               the static binary (build-static.sh)
#   /usr/local/bin/docker                                     this machine's docker CLI
#   /usr/local/libexec/docker/cli-plugins/docker-compose      this machine's Compose v2 plugin
#   the shared libraries a dynamically linked one of those needs (ldd), compose/image/etc/*, /tmp
#
# Usage: scripts/build-image.sh [--binary PATH] [--tag TAG]     (prints the tag)
#   --binary  the stackpilot binary to put in (default: scripts/build-static.sh builds one)
#   --tag     the image tag (default stackpilot:local, what compose/docker-compose.yml runs)
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" tag="stackpilot:local"
while (($#)); do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--tag TAG]" >&2; exit 2 ;;
    esac
done
[[ -n "$binary" ]] || binary=$(scripts/build-static.sh)

docker_cli=$(command -v docker) || { echo "build-image: no docker CLI on PATH" >&2; exit 1; }
docker_cli=$(realpath "$docker_cli")
compose=""
for d in "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins \
    /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins; do
    if [[ -x "$d/docker-compose" ]]; then compose=$(realpath "$d/docker-compose"); break; fi
done
[[ -n "$compose" ]] || { echo "build-image: no Compose v2 plugin (docker-compose in a cli-plugins folder)" >&2; exit 1; }

ctx=$(mktemp -d "${TMPDIR:-/tmp}/stackpilot-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root="$ctx/compose/image"
mkdir -p "$root/usr/local/bin" "$root/usr/local/libexec/docker/cli-plugins" "$root/tmp"
cp -a compose/image/etc "$root/"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/stackpilot"
install -m 0755 "$docker_cli" "$root/usr/local/bin/docker"
install -m 0755 "$compose" "$root/usr/local/libexec/docker/cli-plugins/docker-compose"
# A dynamically linked binary brings its loader and libraries, at the paths it looks for them.
for f in "$root/stackpilot" "$root/usr/local/bin/docker" "$root/usr/local/libexec/docker/cli-plugins/docker-compose"; do
    libs=$(LC_ALL=C ldd "$f" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u || true)
    for lib in $libs; do
        [[ -e "$root$lib" ]] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
done

build=(docker build -q -f compose/Dockerfile --target prebuilt -t "$tag"
       --label "io.stackpilot.binary-sha256=$(sha256sum "$binary" | cut -c1-64)" "$ctx")
if docker buildx version >/dev/null 2>&1; then
    "${build[@]}" >&2
else
    # An engine/CLI without buildx: the classic builder (it builds only up to `prebuilt`).
    DOCKER_BUILDKIT=0 "${build[@]}" 2> >(grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e 'environment-variable' >&2) >&2
fi
echo "$tag"
