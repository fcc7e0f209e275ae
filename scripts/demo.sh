#!/usr/bin/env bash
# make demo: the living loop on this machine (see `proprio demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec target/release/proprio demo "$@"
