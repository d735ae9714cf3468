"""The index manifest: a small JSON file that says what the ``.faiss`` file holds.

Example (``NAME.index.json``)::

    {"format": "sessionctl-index", "version": 1,
     "model_id": "sessionctl/all-MiniLM-L6-v2-int8", "dimension": 384,
     "metric": "cosine", "index_type": "IDMap2,SQfp16,IP",
     "transcript_uid": "01J...", "count": 5, "seqs": [[1, 3], [7, 8]],
     "digests": "<base64: one little-endian uint32 CRC-32 per seq, ascending>",
     "faiss_bytes": 7917, "faiss_sha256": "..."}

``seqs`` lists the covered message seqs as inclusive ranges; ``digests`` holds
the CRC-32 of each covered message's text, so a seq that now names another
text (a seq reused after a drop) is re-embedded. ``faiss_sha256`` and
``faiss_bytes`` pin the exact ``.faiss`` file the manifest describes, so a
truncated, garbage or mismatched file is detected before FAISS reads it.
``index_type`` names the FAISS layout (``index_factory`` spelling):
``IDMap2,SQfp16,IP`` is written; ``IDMap2,Flat,IP`` (float32, sessionctl 0.1.0)
is still read.
"""

from __future__ import annotations

import array
import base64
import binascii
import json
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sessionctl.models import is_seq

FORMAT = "sessionctl-index"
VERSION = 1
METRIC = "cosine"
INDEX_TYPE = "IDMap2,SQfp16,IP"  # what sessionctl writes
FLOAT32_INDEX_TYPE = "IDMap2,Flat,IP"  # what sessionctl 0.1.0 wrote; read, then converted
READABLE_INDEX_TYPES = (INDEX_TYPE, FLOAT32_INDEX_TYPE)


class ManifestError(ValueError):
    """The manifest cannot be used; the message is the rebuild reason."""


def text_digest(text: str) -> int:
    """CRC-32 of a message text (detects a seq that now names another text)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _pack_u32(values: Iterable[int]) -> bytes:
    packed = array.array("I", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack_u32(data: bytes) -> tuple[int, ...]:
    values = array.array("I")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return tuple(values)


def to_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted distinct ints as inclusive ``[start, end]`` ranges."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def from_ranges(ranges: Any, limit: int | None = None) -> list[int]:
    """Inverse of :func:`to_ranges`; raises :class:`ManifestError` on bad input.

    Every seq must be a valid message seq (1 to ``MAX_SEQ``), and with ``limit``
    there may be at most that many (a range of 10**12 is refused, not expanded).
    """
    if not isinstance(ranges, list):
        raise ManifestError("index manifest corrupt (seqs)")
    seqs: list[int] = []
    last = None
    for item in ranges:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(is_seq(v) for v in item)
            or item[0] > item[1]
            or (last is not None and item[0] <= last)
            or (limit is not None and len(seqs) + item[1] - item[0] + 1 > limit)
        ):
            raise ManifestError("index manifest corrupt (seqs)")
        seqs.extend(range(item[0], item[1] + 1))
        last = item[1]
    return seqs


@dataclass(frozen=True)
class Manifest:
    """What one ``.faiss`` file holds."""

    model_id: str
    dimension: int
    transcript_uid: str
    seqs: tuple[int, ...]  # ascending
    digests: tuple[int, ...]  # aligned with seqs
    faiss_bytes: int
    faiss_sha256: str
    index_type: str = INDEX_TYPE

    def to_json(self) -> bytes:
        packed = _pack_u32(self.digests)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "model_id": self.model_id,
            "dimension": self.dimension,
            "metric": METRIC,
            "index_type": self.index_type,
            "transcript_uid": self.transcript_uid,
            "count": len(self.seqs),
            "seqs": to_ranges(self.seqs),
            "digests": base64.b64encode(packed).decode("ascii"),
            "faiss_bytes": self.faiss_bytes,
            "faiss_sha256": self.faiss_sha256,
        }
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate; any problem is a :class:`ManifestError` (rebuild reason)."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ManifestError("index manifest corrupt (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ManifestError("index manifest corrupt (not a sessionctl index manifest)")
        if doc.get("version") != VERSION:
            raise ManifestError(f"index manifest format version {doc.get('version')!r} unknown")
        if doc.get("metric") != METRIC or doc.get("index_type") not in READABLE_INDEX_TYPES:
            raise ManifestError(
                f"index type {doc.get('index_type')!r}/{doc.get('metric')!r} not supported"
            )
        fields = {
            "model_id": str,
            "dimension": int,
            "transcript_uid": str,
            "count": int,
            "digests": str,
            "faiss_bytes": int,
            "faiss_sha256": str,
        }
        for key, kind in fields.items():
            if type(doc.get(key)) is not kind:
                raise ManifestError(f"index manifest corrupt ({key})")
        seqs = from_ranges(doc["seqs"], limit=doc["count"])
        try:
            packed = base64.b64decode(doc["digests"], validate=True)
        except (binascii.Error, ValueError):
            raise ManifestError("index manifest corrupt (digests)") from None
        if len(seqs) != doc["count"] or len(packed) != 4 * len(seqs):
            raise ManifestError("index manifest corrupt (count)")
        digests = _unpack_u32(packed)
        return cls(
            model_id=doc["model_id"],
            dimension=doc["dimension"],
            transcript_uid=doc["transcript_uid"],
            seqs=tuple(seqs),
            digests=digests,
            faiss_bytes=doc["faiss_bytes"],
            faiss_sha256=doc["faiss_sha256"],
            index_type=doc["index_type"],
        )
