"""The file backend: JSON-lines transcripts and derived indexes under a home."""
