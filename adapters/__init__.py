"""Adapters: the embedded (SQLite, files) and Azure implementations of the core's ports."""
