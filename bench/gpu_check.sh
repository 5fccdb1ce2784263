#!/usr/bin/env bash
# The GPU check of issue 18 in one command, for a GPU machine without network (see bench/gpu_check.py):
#   here:  python bench/gpu_check.py prepare        (fills .gpu/: tokenizer, data, Python 3.12 wheels)
#   there: bash bench/gpu_check.sh                  (carry .gpu; results in $OUT/gpu_check.json and on stdout)
#   a CPU rehearsal of the same plumbing:  PYTHON=.venv/bin/python [LF_PYTHON=VENV/bin/python] \
#       bash bench/gpu_check.sh --rehearse
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .gpu/whl ] || { echo "gpu_check: .gpu/whl is missing: run 'python bench/gpu_check.py prepare' first"; exit 2; }
export SL_SITE=${SL_SITE:-/tmp/site-sl} LF_SITE=${LF_SITE:-/tmp/site-lf}
# a CPU rehearsal runs this interpreter's own packages for swiftlike (the wheels are built for the GPU image's 3.12)
[ "${1:-}" = "--rehearse" ] && SL_SITE=/tmp/site-sl-empty && mkdir -p $SL_SITE && touch $SL_SITE/.done
# two separate sites: LLaMA-Factory 0.9.5 pins older transformers/peft/trl/datasets than swiftlike wants
for pair in "sl:$SL_SITE" "lf:$LF_SITE"; do
    name=${pair%%:*} site=${pair#*:}
    if [ ! -f "$site/.done" ] && ls .gpu/whl/$name/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/whl/$name/*.whl \
            && touch "$site/.done" || echo "gpu_check: installing the $name wheels failed"
    fi
done
export PYTHONUNBUFFERED=1
exec timeout 590 $PY bench/gpu_check.py run "$@"
