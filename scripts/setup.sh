#!/usr/bin/env bash
# One-time (and idempotent) set-up: Debian packages, then the Python environment in .venv.
# Fast when already done: the venv is reinstalled only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# torchcodec needs FFmpeg's shared libraries; MuJoCo renders offscreen through EGL (Mesa).
ldconfig -p 2>/dev/null | grep -q "libavcodec.so" || need_apt+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q "libEGL.so.1" || need_apt+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
command -v git >/dev/null || need_apt+=(git)
if ((${#need_apt[@]})); then
    echo "[setup] installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# LeRobot 0.6 needs Python >= 3.12: take $PYTHON if set, else the first of python3, python3.12,
# python3.13 on PATH, else pyenv's installed versions, that is 3.12 or 3.13.
py_ok() { "$1" -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; }
find_python() {
    local c
    if [ -n "${PYTHON:-}" ]; then
        py_ok "$PYTHON" && { echo "$PYTHON"; return; }
        echo "[setup] PYTHON=$PYTHON is not Python 3.12 or 3.13" >&2; return 1
    fi
    for c in python3 python3.12 python3.13; do
        command -v "$c" >/dev/null && py_ok "$c" && { command -v "$c"; return; }
    done
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    for c in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3; do
        [ -x "$c" ] && py_ok "$c" && { echo "$c"; return; }
    done
    echo "[setup] vidact needs Python 3.12 or 3.13 (LeRobot 0.6): install one (e.g. 'pyenv install 3.12', or your distribution's python3.12 with venv) or set PYTHON=/path/to/python3.12" >&2
    return 1
}

# A .venv made by an older set-up (Python 3.11, LeRobot 0.4) is replaced.
if [ -x .venv/bin/python ] && ! py_ok .venv/bin/python; then
    echo "[setup] replacing .venv ($(.venv/bin/python --version 2>&1)): vidact now needs Python >= 3.12"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    PYTHON="$(find_python)"
    echo "[setup] creating .venv with $("$PYTHON" --version) ($PYTHON)"
    "$PYTHON" -m venv .venv
fi

stamp=".venv/.vidact-installed"
want="$(cat pyproject.toml vidact/deploy/lerobot_plugin/package/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing vidact and its dependencies into .venv (several minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev,serve]"
    # The LeRobot plugin shim (LeRobot discovers installed lerobot_policy_* distributions, so
    # `lerobot-eval --policy.path=BUNDLE` finds the vidact type), and openpi's client for the
    # protocol test: openpi-client pins numpy<2, which the rest of the stack cannot take, and its
    # websocket policy runs fine on numpy 2, so it goes in without its pins.
    .venv/bin/python -m pip install -q --no-deps -e vidact/deploy/lerobot_plugin/package "openpi-client==0.1.2"
    echo "$want" > "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, lerobot, vidact; print(f"torch {torch.__version__}, lerobot {lerobot.__version__}, vidact {vidact.__version__}")')"
