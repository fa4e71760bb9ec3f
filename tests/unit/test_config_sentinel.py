"""Redis Sentinel settings (issue 12): the addresses are checked at load, the master's
name has the alias `redis.service_name`, and both stores take the Sentinel path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailwarden.config import ConfigError, load_config
from mailwarden.settings import Settings
from mailwarden.store.redis_store import RedisStore, SyncReleaser, sentinel_hosts


def _load(tmp_path: Path, text: str) -> Settings:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return Settings.from_config(load_config(p))


def test_sentinels_and_the_service_name_alias(tmp_path: Path) -> None:
    s = _load(tmp_path, '[redis]\nsentinels = ["10.0.0.1:26379", "[::1]:26380"]\n'
                        'service_name = "mw-prod"\nurl = "redis://:secret@x/3"\n').redis
    assert s.sentinels == ("10.0.0.1:26379", "[::1]:26380")
    assert s.sentinel_service == "mw-prod"
    assert sentinel_hosts(s.sentinels) == [("10.0.0.1", 26379), ("::1", 26380)]


def test_both_names_at_once_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"redis\.service_name"):
        _load(tmp_path, '[redis]\nservice_name = "a"\nsentinel_service = "b"\n')


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.1:", ":26379", "h:99999", "h:x"])
def test_a_sentinel_address_without_a_port_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"redis\.sentinels"):
        _load(tmp_path, f'[redis]\nsentinels = ["{bad}"]\n')


def test_the_stores_take_the_sentinel_path(tmp_path: Path) -> None:
    s = _load(tmp_path, '[redis]\nsentinels = ["127.0.0.1:1"]\nsentinel_service = "m"\n'
                        'url = "redis://:pw@ignored:6379/2"\n').redis
    store = RedisStore.from_settings(s)
    pool = store.client.connection_pool
    assert pool.service_name == "m" and pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "pw"
    asyncio.run(store.close())
    sync = SyncReleaser.from_settings(s)
    assert sync.client.connection_pool.service_name == "m"
