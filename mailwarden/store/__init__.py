"""The only owner of Redis: key names (keys.py), scripts (scripts/*.lua), calls (redis_store.py)."""
