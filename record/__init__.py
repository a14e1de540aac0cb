"""The result record: schema, condition identity, metric catalogue, storage and the user-error type.

Importable without torch or Lightning: the report reads records with it alone,
and every other package of the harness depends on it (never the other way).
"""
