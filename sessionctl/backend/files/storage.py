"""How the sidecar's ``.faiss`` file is checked, mapped and written (private helpers).

Vectors are stored in IEEE half precision (``IndexScalarQuantizer`` ``QT_fp16``)
and scanned exhaustively: a one-thread query is bound by memory bandwidth, so
half the bytes is about half the time, and a score moves by at most ~1e-4 (the
int8 model itself is ~1e-3 from its float32 reference). Files of sessionctl
0.1.0 hold float32 (``IndexFlatIP``); they are read as they are and converted at
their next change, never re-embedded.

A sound file is mapped read-only with ``IO_FLAG_MMAP_IFC`` (no copy: loading a
100k-vector index costs about the sha256 of its file); the first change copies
it into memory (:func:`writable_index`). Writes stream the index through a
callback into a temp file, hashing as they go, then fsync and rename.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionctl.backend.files.manifest import (
    FLOAT32_INDEX_TYPE,
    INDEX_TYPE,
    Manifest,
    ManifestError,
    text_digest,
)
from sessionctl.errors import EmbeddingError
from sessionctl.fsutil import FILE_MODE, fsync_dir, temp_path_for


@dataclass
class State:
    """One loaded index and what its manifest says about it."""

    index: Any  # faiss.IndexIDMap2 over a half-precision flat scan (see new_index)
    model_id: str
    dimension: int
    transcript_uid: str
    digests: dict[int, int] = field(default_factory=dict)  # seq -> text CRC-32
    writable: bool = True  # False while the index maps the file read-only


def load_faiss() -> Any:
    import faiss

    return faiss


def new_index(dimension: int) -> Any:
    """An empty index: ids are seqs, vectors half precision, every search exhaustive."""
    faiss = load_faiss()
    storage = faiss.IndexScalarQuantizer(
        dimension, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    return faiss.IndexIDMap2(storage)


def _index_type(faiss: Any, index: Any) -> str | None:
    """The manifest's name for this FAISS layout, or None if sessionctl never wrote it."""
    if not isinstance(index, faiss.IndexIDMap2) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexScalarQuantizer):
        if inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
            return INDEX_TYPE
    elif isinstance(inner, faiss.IndexFlat):
        return FLOAT32_INDEX_TYPE
    return None


def read_private(path: Path) -> bytes | None:
    """File contents, or None when it does not exist. Never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestError(f"{path.name} is a symbolic link") from None
        raise ManifestError(f"{path.name} unreadable ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read()
    except OSError as exc:  # a directory, an I/O error
        raise ManifestError(f"{path.name} unreadable ({exc.strerror})") from None


def verify_file(path: Path, manifest: Manifest, trusted: Sequence[int] | None = None) -> None:
    """Check size and sha256 of the ``.faiss`` file (hashing through mmap, no copy).

    ``trusted`` is ``(inode, size, mtime_ns)`` of a file already verified (or written)
    by this process's caller: if the file still has exactly those, the hash of the
    whole file (~90 ms at 100k vectors) is skipped.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestError(f"{path.name} is a symbolic link") from None
        raise ManifestError(f"index file unreadable ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{path.name} is not a regular file")
        if info.st_size != manifest.faiss_bytes:
            raise ManifestError(
                f"index file truncated or replaced ({info.st_size} bytes, "
                f"manifest says {manifest.faiss_bytes})"
            )
        if trusted is not None and list(trusted) == [
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
        ]:
            return
        try:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
                actual = hashlib.sha256(view).hexdigest()
        except (OSError, ValueError) as exc:
            raise ManifestError(f"index file unreadable ({exc})") from None
    finally:
        os.close(fd)
    if actual != manifest.faiss_sha256:
        raise ManifestError("index file corrupt (checksum mismatch)")


def open_index(path: Path, manifest: Manifest) -> State:
    """Map the verified file read-only (zero copy); :func:`writable_index` copies on change."""
    import numpy as np

    faiss = load_faiss()
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except Exception:
        raise ManifestError("index file corrupt (unreadable)") from None
    kind = _index_type(faiss, index)
    if kind is None:
        raise ManifestError("index file holds another kind of index")
    if kind != manifest.index_type:
        raise ManifestError(f"index file holds {kind}, its manifest says {manifest.index_type}")
    ids = np.sort(faiss.vector_to_array(index.id_map))
    if index.d != manifest.dimension or not np.array_equal(ids, np.asarray(manifest.seqs)):
        raise ManifestError("index file does not match its manifest")
    return State(
        index=index,
        model_id=manifest.model_id,
        dimension=manifest.dimension,
        transcript_uid=manifest.transcript_uid,
        digests=dict(zip(manifest.seqs, manifest.digests, strict=True)),
        writable=False,
    )


def writable_index(state: State) -> Any:
    """The state's index, first copied into memory if it is a read-only file mapping.

    FAISS aborts the process (not an exception) when a mapped index is resized,
    so every mutation goes through here. The copy is always half precision, so
    an old float32 file is converted by its first change.
    """
    if not state.writable:
        faiss = load_faiss()
        old = state.index
        vectors = faiss.downcast_index(old.index).reconstruct_n(0, int(old.ntotal))
        index = new_index(state.dimension)
        index.add_with_ids(vectors, faiss.vector_to_array(old.id_map))
        state.index, state.writable = index, True
    return state.index


def add_vectors(state: State, seqs: Sequence[int], vectors: Any, texts: Mapping[int, str]) -> None:
    """Add unit vectors (one row per seq) and record their texts' digests."""
    import numpy as np

    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if vecs.shape != (len(seqs), state.dimension):
        raise EmbeddingError(
            f"embedding model returned shape {vecs.shape}, expected {(len(seqs), state.dimension)}"
        )
    writable_index(state).add_with_ids(vecs, np.asarray(seqs, dtype=np.int64))
    for seq in seqs:
        state.digests[seq] = text_digest(texts[seq])


def remove_seqs(state: State, seqs: Iterable[int]) -> int:
    """Remove these seqs where present; how many were."""
    import numpy as np

    present = sorted({s for s in seqs if s in state.digests})
    if present:
        writable_index(state).remove_ids(np.asarray(present, dtype=np.int64))
        for seq in present:
            del state.digests[seq]
    return len(present)


def clear_way(path: Path) -> None:
    """Remove an empty directory squatting on ``path`` so a file can be renamed there."""
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            path.rmdir()


def write_index_file(path: Path, index: Any) -> tuple[int, str]:
    """Stream ``index`` into ``path`` atomically (temp, fsync, rename); its size and sha256."""
    faiss = load_faiss()
    digest = hashlib.sha256()
    size = 0
    failure: list[OSError] = []
    tmp = temp_path_for(path)  # fixed name: callers hold the session lock
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a crashed writer's leftover
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)

    def sink(chunk: bytes) -> int:
        nonlocal size
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            failure.append(exc)
            raise
        digest.update(chunk)
        size += len(chunk)
        return len(chunk)

    try:
        try:
            os.fchmod(fd, FILE_MODE)
            writer = faiss.PyCallbackIOWriter(sink)
            faiss.write_index(index, writer)
            del writer
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return size, digest.hexdigest()
