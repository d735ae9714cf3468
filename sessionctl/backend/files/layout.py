"""The names of a session's files under ``HOME/sessions/`` (see local.py for the tree)."""

from __future__ import annotations

TRANSCRIPT = ".jsonl"  # the suffix that marks a transcript: the session exists while it does
# Every file that belongs to a session besides its lock; none may end in
# ".jsonl", which marks a transcript. The transcript comes last so that a
# move interrupted halfway never leaves a transcript without its session.
SIDECAR_SUFFIXES = (".faiss", ".index.json", ".index.stamp", ".rejects")
SESSION_SUFFIXES = (*SIDECAR_SUFFIXES, TRANSCRIPT)
