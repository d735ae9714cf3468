"""The default embedding model: model load, peak memory and one-thread throughput.

    python bench/bench_embed.py [--runs 7] [--messages 512] [--words 50]

Every figure comes from fresh child processes and is printed beside baselines
measured in the same run, taking turns so that the machine's drift lands on all:

- ``bare``: ``python -c "import onnxruntime, numpy, tokenizers"``, the floor any
  embedding command pays before loading a model;
- ``0.1``: sessionctl 0.1's configuration, rebuilt here (the int8 file handed as
  bytes to a default ``InferenceSession``, which folds the weights into float32
  constants). It lives in this file only: sessionctl itself has no switch back.

Peak memory is ``ru_maxrss`` of the child (``os.wait4``), so it counts the
whole process: interpreter, imports, model, buffers. (Linux carries the
parent's peak into a child's ru_maxrss across exec; this parent stays far
below any figure.) Times are CPU seconds of the child (``time.process_time``;
one thread, so equal to wall time on an idle core, and steady when the 2 cores
are shared): ``imports`` is onnxruntime + numpy + tokenizers, ``model load``
from there to a model ready to embed (warm page cache), the fastest of the
runs. Throughput embeds ``--messages`` chat-like texts of ``--words`` words (64
per call, as the index's catch-up does) after a warm-up, with onnxruntime, the
tokenizer and BLAS held to one thread: messages per CPU second, best of 3.
``relevant`` is the real CLI command on a temp store whose session has not
been indexed yet (load + catch-up of 200 messages + query), CPU time of the
whole process. No
asserts: figures go in docs/index.md and commit messages, never into timed
tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, WORDS, TempHome, bench_env, precompile

#: sessionctl 0.1's way of running the model, for the same-run baseline.
LEGACY = '''
import numpy as np


class LegacyMiniLM:
    """sessionctl 0.1: default session options, float32 constants folded at load."""

    model_id = "sessionctl/all-MiniLM-L6-v2-int8"
    dimension = 384
    default_distance_threshold = 0.70

    def __init__(self, threads=1):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        from sessionctl.embed import minilm

        data = minilm.read_model_bytes()
        self.tok = Tokenizer.from_str(minilm.read_tokenizer_json())
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def embed(self, texts):
        out = np.zeros((len(texts), 384), dtype=np.float32)
        if not texts:
            return out
        enc = self.tok.encode_batch([t[:65536] for t in texts], add_special_tokens=True)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
        for start in range(0, len(order), 16):
            rows = order[start : start + 16]
            width = max(len(enc[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(rows):
                ids[r, : len(enc[i].ids)] = enc[i].ids
                mask[r, : len(enc[i].ids)] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
            (hidden,) = self.session.run(None, feed)
            w = mask.astype(np.float32)[:, :, None]
            pooled = (hidden * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


def install_legacy():
    """Make get_embedder() (and so every CLI command) load the 0.1 configuration."""
    from sessionctl.embed import minilm
    minilm.load_minilm = lambda threads=1, **kw: LegacyMiniLM(threads)
'''

CHILD = """
import json, resource, sys, time
mode, config, texts_path = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.process_time()
import onnxruntime, numpy, tokenizers
t1 = time.process_time()
imports = t1 - t0
load = 0.0
rate = 0.0
if mode != "bare":
    if config == "0.1":
        exec(LEGACY_SOURCE)
        model = LegacyMiniLM(1)
    else:
        from sessionctl.embed import get_embedder
        model = get_embedder(None, threads=1)
    load = time.process_time() - t1
    model.embed(["what did I say about the budget?"])
    rate = 0.0
    if mode == "throughput":
        texts = json.loads(open(texts_path, encoding="utf-8").read())
        model.embed(texts[:64])  # warm-up
        best = 0.0
        for _ in range(3):
            t = time.process_time()
            for start in range(0, len(texts), 64):
                model.embed(texts[start : start + 64])
            best = max(best, len(texts) / (time.process_time() - t))
        rate = best
print(json.dumps({"imports": imports, "load": load, "rate": rate}))
"""

CLI = """
import sys
if sys.argv[1] == "0.1":
    exec(LEGACY_SOURCE)
    install_legacy()
del sys.argv[1]
from sessionctl.cli.app import main
main()
"""

ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAYON_NUM_THREADS": "1",
}


def messages(n: int, words: int, seed: int = 11) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        picked = [rng.choice(WORDS) for _ in range(words)]
        picked[0] = picked[0].capitalize()
        out.append(" ".join(picked) + rng.choice([".", "?", "!"]))
    return out


def peak_rss_mib(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Run ``argv``; (peak RSS of that child in MiB, its JSON line)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {err.decode()[-800:]}")
    lines = out.decode().strip().splitlines()
    data = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    data["cpu"] = usage.ru_utime + usage.ru_stime
    return usage.ru_maxrss / 1024, data


LABELS = {"bare": "bare: import onnxruntime..", "0.1": "0.1 (baseline)", "now": "now"}


def row(*cells: str) -> None:
    print(cells[0].ljust(28) + "".join(str(c).rjust(12) for c in cells[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per figure")
    parser.add_argument("--messages", type=int, default=512, help="texts for throughput")
    parser.add_argument("--words", type=int, default=50, help="words per text")
    args = parser.parse_args()
    precompile()
    child = f"LEGACY_SOURCE = {LEGACY!r}\n{CHILD}"
    cli = f"LEGACY_SOURCE = {LEGACY!r}\n{CLI}"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {args.runs} runs each")
    with TempHome() as home:
        env = {**bench_env(home), **ONE_THREAD, "PYTHONPATH": str(REPO)}
        texts = messages(args.messages, args.words)
        texts_path = home / "texts.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        configs = ("bare", "0.1", "now")

        def argv(mode: str, config: str) -> list[str]:
            return [sys.executable, "-c", child, mode, config, str(texts_path)]

        # Warm the page cache and any cache the model keeps under the data dir.
        for config in configs[1:]:
            peak_rss_mib(argv("load", config), env)
        loads: dict[str, list[float]] = {c: [] for c in configs}
        imports: dict[str, list[float]] = {c: [] for c in configs}
        rss: dict[str, list[float]] = {c: [] for c in configs}
        for _ in range(args.runs):
            for config in configs:
                mib, data = peak_rss_mib(argv("bare" if config == "bare" else "load", config), env)
                loads[config].append(data["load"])
                imports[config].append(data["imports"])
                rss[config].append(mib)
        print("\n== fresh process: model load (after the imports) and one query ==")
        row("configuration", "imports", "model load", "vs 0.1", "both", "peak RSS", "vs 0.1")
        base_load, base_rss = min(loads["0.1"]), statistics.median(rss["0.1"])
        for config in configs:
            load, mib, imp = (
                min(loads[config]),
                statistics.median(rss[config]),
                min(imports[config]),
            )
            row(
                LABELS[config],
                f"{imp * 1000:.0f} ms",
                f"{load * 1000:.0f} ms",
                f"{load / base_load:.2f}x",
                f"{(imp + load) * 1000:.0f} ms",
                f"{mib:.0f} MiB",
                f"{mib / base_rss:.2f}x",
            )

        print(f"\n== catch-up: {args.messages} texts of {args.words} words, one thread ==")
        row("configuration", "msg/s", "vs 0.1", "peak RSS", "vs 0.1")
        rates: dict[str, list[float]] = {c: [] for c in configs[1:]}
        trss: dict[str, list[float]] = {c: [] for c in configs[1:]}
        for _ in range(max(1, args.runs // 3)):
            for config in configs[1:]:
                mib, data = peak_rss_mib(argv("throughput", config), env)
                rates[config].append(data["rate"])
                trss[config].append(mib)
        base_rate, base_trss = max(rates["0.1"]), statistics.median(trss["0.1"])
        for config in configs[1:]:
            rate, mib = max(rates[config]), statistics.median(trss[config])
            row(
                LABELS[config],
                f"{rate:.0f}",
                f"{rate / base_rate:.2f}x",
                f"{mib:.0f} MiB",
                f"{mib / base_trss:.2f}x",
            )

        print("\n== sessionctl relevant, fresh process, unindexed session of 200 messages ==")
        row("configuration", "CPU time", "vs 0.1", "peak RSS", "vs 0.1")
        from sessionctl import Store

        store = Store(home)
        walls: dict[str, list[float]] = {c: [] for c in configs[1:]}
        crss: dict[str, list[float]] = {c: [] for c in configs[1:]}
        query = ["relevant", "what did I say about the budget?", "-k", "3", "--json"]
        for i in range(args.runs):
            for config in configs[1:]:
                name = f"r{i}{config.replace('.', '')}"
                store.session(name).add_messages(
                    [{"role": "user", "content": t} for t in texts[:200]]
                )
                argv_cli = [sys.executable, "-c", cli, config, *query, "-s", name]
                mib, data = peak_rss_mib(argv_cli, env)
                walls[config].append(data["cpu"])
                crss[config].append(mib)
        base_wall, base_crss = statistics.median(walls["0.1"]), statistics.median(crss["0.1"])
        for config in configs[1:]:
            wall, mib = statistics.median(walls[config]), statistics.median(crss[config])
            row(
                LABELS[config],
                f"{wall * 1000:.0f} ms",
                f"{wall / base_wall:.2f}x",
                f"{mib:.0f} MiB",
                f"{mib / base_crss:.2f}x",
            )


if __name__ == "__main__":
    main()
