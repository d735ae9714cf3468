"""Imported first by the CLI: the garbage collector's threshold for a short-lived process.

Start-up allocates tens of thousands of objects (typer, click, sessionctl's modules;
numpy, onnxruntime and faiss for ``relevant``) and next to none of them is garbage.
At CPython's default threshold (a pass every 700 new objects) the collector walked
them 30 times in a fresh ``list`` (3-10 ms) and 156 times in a fresh ``relevant``
(78-103 ms on a loaded machine). A fresh ``relevant`` over 10,000 sessions allocates
about 79,000; with a young generation of 100,000 it finishes without a pass, and a
long-running command (the REPL, the MCP server, an import) still collects its
cycles, every 100,000 new objects instead of every 700. A higher threshold set by
whoever embeds the CLI is left alone, and so is a collector switched off.
"""

import gc

YOUNG = 100_000

_young, *_older = gc.get_threshold()
if 0 < _young < YOUNG:
    gc.set_threshold(YOUNG, *_older)
