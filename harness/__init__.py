"""Private, loopback-only instances of the real servers mailwarden works with.

Used by the test suite (tests/conftest.py) and by `make run`
(`python -m harness`). Every instance lives in its own directory,
listens on 127.0.0.1 or a unix socket, and is stopped by the PID it was
started with — never by name.
"""
