"""mailwarden: Postfix policy daemon and milter enforcing provincial mail regulations."""

__version__ = "0.1.0"
