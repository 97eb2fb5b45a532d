"""Adapters for the ports: ``aws`` (boto3, client injected) and ``local`` (SQLite and files)."""
