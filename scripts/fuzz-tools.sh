#!/usr/bin/env bash
# Installs cargo-fuzz into the git-ignored .tools/ folder, once (make fuzz
# and make fuzz-corpus run it; a fresh machine gets it from there).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=0.13.2
if ! "$root/.tools/bin/cargo-fuzz" fuzz --version 2>/dev/null | grep -qF "$version"; then
  echo "fuzz-tools: installing cargo-fuzz $version into $root/.tools"
  cargo install cargo-fuzz --version "$version" --locked --root "$root/.tools"
fi
