"""Clients for the services mailwarden talks to (clamd). Blocking, deadline-aware, no retries
hidden inside: a client turns every network or peer failure into a value the caller's failure
policy can act on, and raises only for programming errors."""
