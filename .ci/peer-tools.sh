#!/usr/bin/env bash
# Create (once) the virtualenvs of the peer tools whose on-disk formats
# `sessionctl import --from` reads, so the import tests can run the real tools:
# llm 0.36 and shell-gpt 1.5.1 (with typer<0.26 and click beside it), and
# gptme when it installs here. Everything comes from the package index. The
# cache lives outside the clone and is reused when present. Prints the cache
# directory on stdout when done; each tool is in $DIR/<tool>/bin.
set -euo pipefail
DIR=${SESSIONCTL_PEERS_DIR:-/var/cache/sessionctl-ci/peers}
PY=${PYTHON:-python3}
mkdir -p "$DIR"

make_venv() {  # name, executable, pip requirements...
    local name=$1 exe=$2
    shift 2
    if [ -x "$DIR/$name/bin/$exe" ] && [ -f "$DIR/$name/.complete" ]; then
        return 0
    fi
    rm -rf "$DIR/$name.part"
    "$PY" -m venv "$DIR/$name.part" >&2
    if "$DIR/$name.part/bin/pip" install -q "$@" >&2; then
        touch "$DIR/$name.part/.complete"
        rm -rf "$DIR/$name"
        # a venv's scripts name their interpreter by path: rebuild it in place
        mv "$DIR/$name.part" "$DIR/$name"
        "$PY" -m venv --upgrade "$DIR/$name" >&2
        sed -i "1s|^#!.*$name.part/bin/python.*|#!$DIR/$name/bin/python|" "$DIR/$name"/bin/* 2>/dev/null || true
        sed -i "s|$DIR/$name.part|$DIR/$name|g" "$DIR/$name/bin/activate" "$DIR/$name/pyvenv.cfg" 2>/dev/null || true
    else
        echo "peer-tools: could not install $* (tests of $name use fixtures)" >&2
        rm -rf "$DIR/$name.part"
        return 0
    fi
}

make_venv llm llm 'llm==0.36'
make_venv sgpt sgpt 'shell-gpt==1.5.1' 'typer<0.26' click
if [ "${SESSIONCTL_PEERS_GPTME:-1}" = 1 ]; then
    make_venv gptme gptme gptme
fi
echo "$DIR"
