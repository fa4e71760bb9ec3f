"""Pure decisions: plain values in, a Verdict (or None) out. No I/O, no logging.

Nothing here imports policyd, milter, clients or store.redis_store; a test
checks the import graph (tests/unit/test_layering.py).
"""
