#!/usr/bin/env bash
# Builds stackpilot as one static Linux binary (release) and prints its path on stdout:
#   - x86_64-unknown-linux-musl when that Rust target is installed and a musl C compiler is
#     there (musl-gcc, Debian package musl-tools; zstd's C code needs it): no libc at all, and
#     musl's resolver reads /etc/hosts and /etc/resolv.conf, so host names resolve anywhere;
#   - else the host target with glibc linked statically (-C target-feature=+crt-static), as
#     tests/images/ollama-standin is built: runs on any Linux, but resolving a host name would
#     need glibc's NSS modules at run time (stackpilot reaches Docker by socket and Ollama by
#     URL; an IP address needs no resolver).
# Build output goes to stderr. CARGO_TARGET_DIR is honoured. Cold: a full release build (about
# 10 minutes on 2 cores); warm: seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
musl="${host%%-*}-unknown-linux-musl"
rustflags=""
if rustup target list --installed 2>/dev/null | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
    triple=$musl
    export "CC_${musl//-/_}=musl-gcc"
else
    triple=$host
    rustflags="-C target-feature=+crt-static"
fi
echo "build-static: cargo build --release --target $triple ${rustflags:+(RUSTFLAGS=$rustflags)}" >&2
RUSTFLAGS="$rustflags" cargo build --release --locked --target "$triple" --bin stackpilot >&2
bin="${CARGO_TARGET_DIR:-target}/$triple/release/stackpilot"
out=$(LC_ALL=C ldd "$bin" 2>&1 || true)
if [[ "$out" != *"not a dynamic executable"* && "$out" != *"statically linked"* ]]; then
    echo "build-static: $bin is not static: $out" >&2
    exit 1
fi
realpath "$bin"
