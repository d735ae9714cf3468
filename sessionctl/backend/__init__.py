"""Storage backends: where sessions and their indexes live.

``base`` holds the two interfaces the service layer talks to; ``files`` is the
embedded default (JSON-lines transcripts and derived indexes under the home).
Nothing above this package knows about files, FAISS or SQL.
"""
