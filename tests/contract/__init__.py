"""The backend contract suite (see conftest.py).

A package, so that its conftest never shadows tests/conftest.py for `from conftest import`.
"""
