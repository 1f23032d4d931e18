"""Idempotency keys: the first response to a keyed POST, kept so a retry replays it (api-v1.md, 'Idempotency')."""
