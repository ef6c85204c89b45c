# Shared by scripts/run.sh and scripts/test.sh: the virtualenv and the Python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

ensure_venv() {
    local extras=$1
    if [ ! -x .venv/bin/python ]; then
        echo "== Creating the virtualenv (.venv)"
        "$PY" -m venv .venv
    fi
    # Reinstall only when pyproject.toml changed since the last install.
    local stamp=".venv/.installed-$extras"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "== Installing Python dependencies ($extras)"
        # This machine's pip config names local indexes that may be absent: hide that noise.
        .venv/bin/pip install --quiet --disable-pip-version-check -e ".[$extras]" 2>&1 \
            | { grep -v "^WARNING: Location" || true; }
        touch "$stamp"
    fi
}

apt_install() {
    # Installs Debian packages that are missing; quiet when everything is there.
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== Installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
