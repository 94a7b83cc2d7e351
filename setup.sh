#!/usr/bin/env bash
# Set up the course environment in .venv/ and then either open JupyterLab or run every test.
#
#   bash setup.sh lab     # make .venv, then open JupyterLab on notebooks/ (prints the URL)
#   bash setup.sh lab --instructor   # ... at the repository root, with jupyterlab-rise, to present solutions/
#   bash setup.sh test    # make .venv, then run the library tests and every notebook under nbval
#   bash setup.sh env     # only make .venv
set -euo pipefail
cd "$(dirname "$0")"
action="${1:-lab}"
shift || true

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
# torch first, pinned, so that pip takes the CPU build and nothing pulls a CUDA one
# ACVM_TORCH_INDEX: a package index for torch alone, e.g. https://download.pytorch.org/whl/cpu on
# a Linux laptop without a GPU (PyPI's Linux torch is the CUDA build, several GB); unset: pip's own
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "== installing torch==2.13.0${ACVM_TORCH_INDEX:+ from $ACVM_TORCH_INDEX}"
    .venv/bin/pip install --disable-pip-version-check -q ${ACVM_TORCH_INDEX:+--index-url "$ACVM_TORCH_INDEX"} "torch==2.13.0"
fi
if ! .venv/bin/python -c "import acvm, nbval, playwright, trax, vot, got10k" 2>/dev/null || [ pyproject.toml -nt .venv/.acvm-installed ]; then
    echo "== installing acvm and the course environment (pinned in constraints.txt)"
    .venv/bin/pip install --disable-pip-version-check -q -c constraints.txt -e ".[test,vot,got10k]"
    # the VOT toolkit without its opencv-python requirement, which would replace OpenCV's contrib build
    .venv/bin/pip install --disable-pip-version-check -q -c constraints.txt --no-deps "vot-toolkit==0.7.4"
    touch .venv/.acvm-installed
fi
# nbgrader is installed for the instructors' command line (acvm course nbgrader, its test); its
# JupyterLab menus and server pages stay out of the students' lab
if [ ! -e .venv/.nbgrader-ui-off ] && .venv/bin/python -c "import nbgrader" 2>/dev/null; then
    .venv/bin/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1 || true
    for part in formgrader validate_assignment assignment_list course_list; do
        .venv/bin/jupyter server extension disable --sys-prefix "nbgrader.server_extensions.$part" >/dev/null 2>&1 || true
    done
    touch .venv/.nbgrader-ui-off
fi

ensure_chromium() {
    # the browser test drives JupyterLab in the system's Chromium (Debian's package)
    if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== Chromium is missing: installing Debian's chromium package for the browser test"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "== could not install Chromium; the browser test will be skipped"
    else
        echo "== Chromium is missing and this user cannot apt-get it; the browser test will be skipped"
    fi
}

case "$action" in
    env)
        echo "== environment ready: .venv/bin/acvm, .venv/bin/jupyter" ;;
    lab)
        flags=(--ip 127.0.0.1 --no-browser)
        [ "$(id -u)" = 0 ] && flags+=(--allow-root)
        export OMP_WAIT_POLICY=PASSIVE
        folder=notebooks/
        if [ "${1:-}" = --instructor ]; then
            shift
            # RISE presents the running solved notebooks as slides (the lecture guide, "Presenting")
            if ! .venv/bin/python -c "import jupyterlab_rise" 2>/dev/null; then
                echo "== installing jupyterlab-rise (the slides extra) for presenting solutions/"
                .venv/bin/pip install --disable-pip-version-check -q -c constraints.txt -e ".[slides]"
            fi
            folder=.
            echo "== opening JupyterLab at the repository root: solutions/ to present, notebooks/ as students see them"
        else
            echo "== opening JupyterLab on notebooks/ (open the URL printed below in your browser)"
        fi
        exec .venv/bin/jupyter lab "$folder" "${flags[@]}" "$@" ;;
    test)
        ensure_chromium
        export MPLBACKEND=Agg PYTHONHASHSEED=0 OMP_WAIT_POLICY=PASSIVE
        nbval=(--nbval-lax --nbval-sanitize-with tests/sanitize.cfg --nbval-cell-timeout=120 -p no:cacheprovider)
        # two workers: notebooks and test files run side by side on the 2 cores; loadscope keeps
        # the cells of one notebook on one worker (and so in one kernel)
        status=0
        # --durations: the slowest tests, for whoever keeps the suite inside its time
        .venv/bin/python -m pytest -n 2 --dist loadscope --durations=20 tests notebooks solutions "${nbval[@]}" "$@" || status=$?
        # every solution once more on the kernels of a CPU without AVX-512 (most students' laptops),
        # so that a checked output which depends on the CPU fails here and not there (DEVELOPING.md)
        if [ "$(uname -m)" = x86_64 ] && [ "$#" = 0 ]; then
            echo "== the solution notebooks again, on AVX2 kernels (torch, oneDNN, numpy, OpenCV)"
            avx2=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENCV_CPU_DISABLE=AVX512-SKX)
            if .venv/bin/python -c "import sys, numpy._core._multiarray_umath as m; sys.exit(not m.__cpu_features__.get('X86_V4'))"; then
                avx2+=("NPY_DISABLE_CPU_FEATURES=X86_V4 AVX512_ICL AVX512_SPR")
            fi
            env "${avx2[@]}" .venv/bin/python -m pytest -n 2 --dist loadscope solutions "${nbval[@]}" || status=$?
        fi
        exit "$status" ;;
    *)
        echo "usage: bash setup.sh [lab|test|env]" >&2; exit 2 ;;
esac
