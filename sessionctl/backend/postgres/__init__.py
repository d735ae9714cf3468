"""The PostgreSQL + pgvector store (``pip install 'sessionctl[postgres]'``).

Imported only when a ``postgresql://`` store is used; nothing else imports psycopg.
So far this package holds the schema and its migrations (:mod:`.schema`); the
backend's session and vector stores build on it.
"""
