#!/usr/bin/env bash
# Create .venv and install raysae into it; safe to rerun.
#   bash scripts/install.sh         # the package, everything it runs on, and the embedded store server
#   bash scripts/install.sh --dev   # plus pytest/ruff/Playwright, SAELens and circuit-tracer (for the
#                                   # checkpoint-format tests)
#                                   # and Debian's chromium (for the browser tests; apt, as root or via sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip_install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# One retry without pip's cache: a download that arrives damaged (a hash mismatch
# against the index, seen once in CI for ray's 79 MB wheel) is transient.
pip() { "${pip_install[@]}" "$@" || { echo "pip install failed; retrying once without the cache" >&2; "${pip_install[@]}" --no-cache-dir "$@"; }; }
# torch first and pinned: on CPU machines this is the local CPU wheel; anything
# unpinned would pull a multi-GB CUDA build. constraints.txt keeps it there.
pip torch==2.13.0
if [ "$dev" = 1 ]; then
  pip -c constraints.txt -e '.[dev,store]'
  if [ ! -d .saelens-env/sae_lens ]; then
    # SAELens needs TransformerLens < 4, so it lives in a side folder that only the
    # compatibility test puts on PYTHONPATH (tests/compat/saelens-requirements.txt).
    rm -rf .saelens-env.tmp
    pip --no-deps --target .saelens-env.tmp -r tests/compat/saelens-requirements.txt
    mv .saelens-env.tmp .saelens-env
  fi
  if [ ! -d .circuit-tracer-env/circuit_tracer ]; then
    # circuit-tracer 0.5 pins transformers<=4.57.3 and huggingface-hub<1, so it lives in a side
    # folder that only its compatibility test puts on PYTHONPATH (tests/compat/circuit-tracer-requirements.txt).
    rm -rf .circuit-tracer-env.tmp
    pip --no-deps --target .circuit-tracer-env.tmp -r tests/compat/circuit-tracer-requirements.txt
    mv .circuit-tracer-env.tmp .circuit-tracer-env
  fi
else
  pip -c constraints.txt -e '.[store]'
fi
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null; then
  # The browser tests drive Debian's Chromium through Playwright, which downloads no browser.
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q chromium >/dev/null; } \
    || echo "warning: could not install Debian's chromium; the browser tests will fail" >&2
fi
echo "raysae installed in $(pwd)/.venv"
