"""Benchmark the embedding model and the FAISS sidecar (prints tables; no asserts).

    python bench/bench_index.py               # model, catch-up, queries, fresh process
    python bench/bench_index.py --ann         # + flat vs HNSW at 10k / 100k
    python bench/bench_index.py --ann-only --ann-sizes 1000000  # 1M: HNSW build takes minutes

Figures go in docs/index.md, never into timed test assertions. Every figure is
printed beside the baseline measured in the same run (model load alone, flat
exact search) so that a slower or faster machine reads the same ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sessionctl import embed
from sessionctl.backend.files.sidecar import SidecarIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORDS

DIM = 384


def chat_messages(n: int, seed: int = 7, words: tuple[int, int] = (20, 60)) -> list[str]:
    """Chat-like texts of 20-60 words (about 25-75 tokens) unless ``words`` says otherwise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        picked = [rng.choice(WORDS) for _ in range(rng.randint(*words))]
        picked[0] = picked[0].capitalize()
        out.append(" ".join(picked) + rng.choice([".", "?", "!"]))
    return out


def unit_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class RandomEmbedder:
    """Stands in for MiniLM when filling big indexes (same model id and dimension)."""

    model_id = embed.DEFAULT_MODEL_ID
    dimension = DIM
    default_distance_threshold = 0.7

    def __init__(self) -> None:
        self.seed = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seed += 1
        return unit_rows(len(texts), self.seed)


def row(*cells: str) -> None:
    print(cells[0].ljust(34) + "".join(str(c).rjust(17) for c in cells[1:]))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def bench_model() -> None:
    print("\n== embedding model (all-MiniLM-L6-v2 int8, onnxruntime) ==")
    from sessionctl.embed import minilm

    t0 = time.perf_counter()
    data = minilm.read_model_bytes()
    t1 = time.perf_counter()
    model = minilm.MiniLMEmbedder(data, minilm.read_tokenizer_json(), threads=1)
    t2 = time.perf_counter()
    row("read + sha256 model.onnx", ms(t1 - t0))
    row("tokenizer + onnxruntime session", ms(t2 - t1))
    row("model load total (in process)", ms(t2 - t0))

    texts = chat_messages(512)
    model.embed(texts[:32])  # warm up
    t = time.perf_counter()
    model.embed(["what did I say about the budget?"])
    row("one query embedding", ms(time.perf_counter() - t))
    for threads in (1, 2):
        m = (
            model
            if threads == 1
            else minilm.MiniLMEmbedder(data, minilm.read_tokenizer_json(), threads=2)
        )
        m.embed(texts[:32])
        t = time.perf_counter()
        m.embed(texts)
        rate = len(texts) / (time.perf_counter() - t)
        row(f"embed throughput, {threads} thread(s)", f"{rate:.0f} msg/s", "(20-60 words)")


def fill(directory: Path, n: int) -> SidecarIndex:
    index = SidecarIndex.for_session(directory, f"s{n}")
    index.sync(
        [(i, f"message {i}") for i in range(1, n + 1)],
        RandomEmbedder(),
        transcript_uid="bench",
        batch_size=4096,
    )
    return index


def float32_query_p50(index: SidecarIndex, queries: np.ndarray) -> float:
    """Same-run baseline: the same vectors as a mapped float32 IndexFlatIP (sessionctl 0.1.0)."""
    import faiss

    # an IndexIDMap2 (read_index is typed as returning the base class)
    mapped: Any = faiss.read_index(str(index.faiss_path), faiss.IO_FLAG_MMAP_IFC)
    vectors = faiss.downcast_index(mapped.index).reconstruct_n(0, int(mapped.ntotal))
    built = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    built.add_with_ids(vectors, faiss.vector_to_array(mapped.id_map))
    del vectors, mapped
    path = index.faiss_path.with_name("float32.faiss")
    faiss.write_index(built, str(path))
    del built
    flat = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    faiss.omp_set_num_threads(1)
    lat = []
    for q in queries:
        t = time.perf_counter()
        flat.search(q[None, :], 6)
        lat.append(time.perf_counter() - t)
    del flat
    path.unlink()
    return statistics.median(lat)


def bench_sidecar(directory: Path, sizes: Sequence[int]) -> None:
    print("\n== sidecar (exact scan, IndexIDMap2(SQfp16), 384-d), in process ==")
    row(
        "size",
        "fill+save",
        "no-op sync",
        "+10 msgs sync",
        "query p50",
        "query p95",
        "float32 p50",
        "file MB",
    )
    queries = unit_rows(200, 99)
    model = embed.get_embedder()
    for n in sizes:
        t = time.perf_counter()
        index = fill(directory, n)
        build = time.perf_counter() - t
        messages = [(i, f"message {i}") for i in range(1, n + 1)]
        t = time.perf_counter()
        SidecarIndex(index.faiss_path, index.manifest_path).sync(
            messages, model, transcript_uid="bench"
        )
        noop = time.perf_counter() - t
        scratch = SidecarIndex.for_session(directory, f"scratch{n}")
        index.copy_to(scratch, range(1, n + 1), transcript_uid="scratch")
        more = [*messages, *((i, f"message {i}") for i in range(n + 1, n + 11))]
        t = time.perf_counter()
        SidecarIndex(scratch.faiss_path, scratch.manifest_path).sync(
            more, RandomEmbedder(), transcript_uid="scratch"
        )
        plus10 = time.perf_counter() - t
        scratch.delete()
        lat = []
        for q in queries:
            t = time.perf_counter()
            index.search(q, 5)
            lat.append(time.perf_counter() - t)
        lat.sort()
        size = index.faiss_path.stat().st_size / 1e6
        base = float32_query_p50(index, queries)
        row(
            f"{n:,}",
            ms(build),
            ms(noop),
            ms(plus10),
            ms(lat[len(lat) // 2]),
            ms(lat[int(len(lat) * 0.95)]),
            f"{ms(base)} ({lat[len(lat) // 2] / base:.2f}x)",
            f"{size:.1f}",
        )

    print("\n  catch-up with the real model, one thread (embedding dominates):")
    peak = fp32_peak_one_core()
    row("size of messages", "msg/s", "tokens/msg", "fp32 ceiling", "of ceiling", "100k takes")
    for label, texts in (
        ("chat lines (5-25 words)", chat_messages(1000, seed=3, words=(5, 25))),
        ("longer (20-60 words)", chat_messages(1000, seed=3)),
    ):
        index = SidecarIndex.for_session(directory, "catchup")
        index.delete()
        t = time.perf_counter()
        index.sync(list(enumerate(texts, start=1)), model, transcript_uid="c")
        rate = len(texts) / (time.perf_counter() - t)
        tokens = mean_tokens(model, texts)
        ceiling = peak / (tokens * FLOP_PER_TOKEN)
        row(
            label,
            f"{rate:.0f}",
            f"{tokens:.1f}",
            f"{ceiling:.0f} msg/s",
            f"{rate / ceiling:.0%}",
            f"{100_000 / rate / 60:.0f} min",
        )
    print(
        f"  (fp32 ceiling = one core's measured float32 matmul rate, {peak / 1e9:.0f} GFLOP/s, "
        f"over {FLOP_PER_TOKEN / 1e6:.1f} MFLOP per token of MiniLM-L6)"
    )


#: Multiply-adds per token of MiniLM-L6 (hidden 384, FFN 1536, 6 layers), x2 for FLOPs;
#: attention scores add under 2 % at chat lengths and are left out (the ceiling is generous).
FLOP_PER_TOKEN = 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536)

PEAK_CHILD = """
import time, numpy as np
a = np.random.rand(1024, 384).astype(np.float32); b = np.random.rand(384, 1536).astype(np.float32)
best = 0.0
for _ in range(20):
    t = time.perf_counter()
    a @ b
    best = max(best, 2 * 1024 * 384 * 1536 / (time.perf_counter() - t))
print(best)
"""


def fp32_peak_one_core() -> float:
    """FLOP/s of one core on a MiniLM-shaped float32 matmul (BLAS pinned to one thread)."""
    one = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, **one}
    out = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def mean_tokens(model: object, texts: Sequence[str]) -> float:
    encode = getattr(model, "_encode", None)
    if encode is None:
        return float("nan")
    return sum(len(e.ids) for e in encode(list(texts))) / len(texts)


CHILD = """
import sys, time
t0 = time.perf_counter()
from sessionctl import embed
from sessionctl.backend.files.sidecar import SidecarIndex
from pathlib import Path
model = embed.get_embedder()
t1 = time.perf_counter()
if len(sys.argv) > 1:
    n = int(sys.argv[2])
    index = SidecarIndex.for_session(Path(sys.argv[1]), f"s{n}")
    index.sync([(i, f"message {i}") for i in range(1, n + 1)], model, transcript_uid="bench")
    t2 = time.perf_counter()
    hits = index.search(model.embed(["what did I say about the budget?"])[0], 5)
    t3 = time.perf_counter()
    print(t1 - t0, t2 - t1, t3 - t2)
else:
    print(t1 - t0, 0, 0)
"""


def bench_fresh_process(directory: Path, sizes: Sequence[int]) -> None:
    print("\n== fresh process: import + model load + index check + query ==")

    def run(*args: str) -> tuple[float, float, float, float]:
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - t
        load, sync, query = (float(x) for x in out.stdout.split())
        return wall, load, sync, query

    base = min(run()[0] for _ in range(3))
    row("baseline: python + model load", ms(base), "1.00x")
    row("size", "wall", "ratio", "index load", "embed+search")
    for n in sizes:
        wall, _load, sync, query = min(
            (run(str(directory), str(n)) for _ in range(3)), key=lambda r: r[0]
        )
        row(f"{n:,}", ms(wall), f"{wall / base:.2f}x", ms(sync), ms(query), f"+{ms(wall - base)}")


def bench_ann(sizes: Sequence[int]) -> None:
    import faiss

    print("\n== exact flat vs HNSW (random unit vectors, k=10, 1 search thread) ==")
    row("size / index", "build", "query p50", "recall@10", "vs flat")
    queries = unit_rows(100, 1234)
    for n in sizes:
        xb = unit_rows(n, n)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        flat.add_with_ids(xb, np.arange(n, dtype=np.int64))
        flat_build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        truth, flat_lat = [], []
        for q in queries:
            t = time.perf_counter()
            _d, i = flat.search(q[None, :], 10)
            flat_lat.append(time.perf_counter() - t)
            truth.append(set(i[0].tolist()))
        flat_p50 = statistics.median(flat_lat)
        row(f"{n:,} flat", ms(flat_build), ms(flat_p50), "1.000", "1.00x")
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.add(xb)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        for ef in (64, 256):
            hnsw.hnsw.efSearch = ef
            lat, hit = [], 0
            for q, want in zip(queries, truth, strict=True):
                t = time.perf_counter()
                _d, i = hnsw.search(q[None, :], 10)
                lat.append(time.perf_counter() - t)
                hit += len(want & set(i[0].tolist()))
            p50 = statistics.median(lat)
            row(
                f"{n:,} HNSW32 ef={ef}",
                ms(build),
                ms(p50),
                f"{hit / (10 * len(queries)):.3f}",
                f"{p50 / flat_p50:.2f}x",
            )
        del xb, flat, hnsw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", action="store_true", help="compare flat with HNSW")
    parser.add_argument("--ann-only", action="store_true", help="only the flat vs HNSW table")
    parser.add_argument("--ann-sizes", default="10000,100000", help="comma-separated sizes")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    ann_sizes = [int(x) for x in args.ann_sizes.split(",")]
    if args.ann_only:
        bench_ann(ann_sizes)
        return
    bench_model()
    sizes = (1_000, 10_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        bench_sidecar(Path(tmp), sizes)
        bench_fresh_process(Path(tmp), sizes)
    if args.ann:
        bench_ann(ann_sizes)


if __name__ == "__main__":
    main()
