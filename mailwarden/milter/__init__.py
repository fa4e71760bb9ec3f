"""The milter. `evaluate` is pymilter-free (also used by `mailwarden check`);
`app` is the pymilter adapter. Never import `app` from here: this package must
stay importable where pymilter is not."""
