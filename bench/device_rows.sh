#!/usr/bin/env bash
# The GPU rows of docs/reproduction.md (CIFAR-10 IPC 10: dm, idm, idm_iid at the recipes' full schedules) in one
# prepared call of a lent accelerator machine, whose Python has torch but not every ddcore dependency.
#
#   bash bench/device_rows.sh prepare        # here: wheels it lacks + ddcore's own into .whl/, CIFAR-10 into .data/
#   bash bench/device_rows.sh run [ROW...]   # there: install .whl/, run the rows (default: dm idm idm_iid),
#                                            #        save one result JSON per row to $OUT (ddcore report --save)
#
# The call (carry: .whl and .data; both are ignored by git):
#   bash bench/device_rows.sh run dm
# then here: cp <files_at>/*.json docs/results/ && ddcore report
#
# Every row: IPC 10, the recipe's full schedule, evaluated every 5000 iterations (a curve of four points) without
# the Random baseline (its rows are docs/results/cifar10_random-*). ROW_ARGS adds --set options to every row (e.g.
# ROW_ARGS="--set run.iterations=2" for a smoke test); ROW_TIMEOUT (seconds, default 540) stops a row with SIGTERM
# (it checkpoints; no result is saved), so that one call ends inside the tool's 10-minute limit. PYVER (default
# 3.12, the device image's Python) picks the wheels' Python.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
PY=${PYTHON:-python3}

prepare() {
    mkdir -p "$WHEELS"
    rm -f "$WHEELS"/*.whl
    # The device image has attrs, numpy, torch, torchvision, pluggy, matplotlib, rich, safetensors, Pillow and
    # scikit-learn, not these two. Only the plugins of the rows travel: the 64 MiB a call carries hold CIFAR-10
    # (54 MiB) and little else, so kornia (KRR, rotations) stays behind.
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "cattrs==$(pip_version cattrs)" "tomli-w==$(pip_version tomli-w)"
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . plugins/ddcore-{dm,idm,iid,dcc}/
    local data="${DDCORE_DATA:-$(cd .. && pwd)/shared/datasets}"
    mkdir -p .data
    cp -r "$data/cifar10-jpeg" .data/
    du -sh "$WHEELS" .data
}

pip_version() {  # the version installed here, so both machines run the same library code
    "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}

run_rows() {
    local out="${OUT:?run: OUT is the folder whose files come back}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site DDCORE_DATA="$PWD/.data" PYTHONUNBUFFERED=1
    local ddcore=("$PY" -m ddcore)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    local rows=("$@")
    [ ${#rows[@]} -gt 0 ] || rows=(dm idm idm_iid)
    for row in "${rows[@]}"; do
        local recipe="recipes/$row.toml"
        [ -f "$recipe" ] || { echo "device_rows: no recipe $recipe" >&2; exit 2; }
        local t0=$SECONDS
        # shellcheck disable=SC2086  # ROW_ARGS is a list of --set options
        if timeout -s TERM "${ROW_TIMEOUT:-540}" "${ddcore[@]}" run "$recipe" --set synset.ipc=10 \
                --set run.eval_every=5000 --set 'eval.baselines=[]' ${ROW_ARGS:-} \
                --out "/tmp/runs/$row" --no-progress 2>&1 | tee "$out/$row.log"; then
            "${ddcore[@]}" report "/tmp/runs/$row" --save "$out"
        else
            echo "device_rows: $row stopped after $((SECONDS - t0)) s (checkpoint in /tmp/runs/$row)" >&2
        fi
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run_rows "$@" ;;
    *) echo "usage: bash bench/device_rows.sh prepare | run [ROW...]" >&2; exit 2 ;;
esac
