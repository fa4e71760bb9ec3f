"""config.py: the schema is the single source; bad files are refused with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.config import SCHEMA, ConfigError, load_config, reference_markdown, sample_config
from mailwarden.profiles import load_profile, shipped_profiles_dir

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mw.toml"
    p.write_text(text)
    return p


def test_shipped_sample_is_generated_from_the_schema() -> None:
    assert (ROOT / "conf" / "mailwarden.toml").read_text() == sample_config(), (
        "conf/mailwarden.toml drifted: regenerate with `mailwarden config sample`")


def test_config_reference_is_generated_from_the_schema() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown(), (
        "docs/config.md drifted: regenerate with `mailwarden config reference`")


def test_shipped_sample_loads_and_every_key_is_documented() -> None:
    cfg = load_config(ROOT / "conf" / "mailwarden.toml")
    assert cfg["ratelimit.limit"] == 250
    for key in SCHEMA:
        assert key.doc and key.name in cfg.values


@pytest.mark.parametrize("text,message", [
    pytest.param("[policyd]\nlisten = \"127.0.0.1:10031\"\n", "policyd.listen", id="bad-listen"),
    pytest.param("[policyd]\nlistn = \"x\"\n", "policyd.listn: unknown key", id="typo-key"),
    pytest.param("[ratelimit]\nenabled = \"yes\"\n", "TOML boolean", id="bool-as-string"),
    pytest.param("[ratelimit]\nlimit = 0\n", "greater than 0", id="zero-limit"),
    pytest.param("[ratelimit]\nwindow = \"ten\"\n", "duration", id="bad-window"),
    pytest.param("[ratelimit]\ncount = \"bytes\"\n", "one of", id="bad-count"),
    pytest.param("[policyd]\non_redis_error = \"ignore\"\n", "one of", id="bad-failure-policy"),
    pytest.param("[policyd]\ntrusted_networks = [\"10.0.0.0/33\"]\n", "not a network",
                 id="bad-network"),
    pytest.param("[redis]\nurl = \"localhost:6379\"\n", "redis://", id="bad-redis-url"),
    pytest.param("[profile]\nname = \"nowhere-1-2000\"\n", "no such profile", id="bad-profile"),
    pytest.param("[ratelimit]\noverrides = { \"bulk\" = { limit = 5 } }\n", "mail addresses",
                 id="override-not-address"),
    pytest.param("[ratelimit]\noverrides = { \"a@b.c\" = { limit = \"5\" } }\n", "allowed",
                 id="override-bad-value"),
    pytest.param("policyd = 5\n", "expected a [policyd] table", id="not-a-table"),
    pytest.param("[policyd\n", "not valid TOML", id="syntax"),
])
def test_bad_config_is_refused_with_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_profile_values_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[ratelimit]\nlimit = 100\nwindow = \"1h\"\n"))
    assert cfg["ratelimit.limit"] == 100 and cfg["ratelimit.window"] == 3600.0
    assert cfg.origins["ratelimit.limit"] == str(tmp_path / "mw.toml")
    assert cfg.origins["ratelimit.count"] == "profile ninhbinh-162-2025"


def test_other_profile_changes_domain_and_numbers(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[profile]\nname = \"hanam-27-2023\"\n"))
    assert cfg.local_domains == ("hanam.gov.vn",)
    assert cfg.profile.attachments_max_bytes == 20 * 1024 * 1024
    assert cfg["ratelimit.enabled"] is False


def test_every_shipped_profile_loads() -> None:
    names = sorted(p.stem for p in shipped_profiles_dir().glob("*.toml"))
    assert len(names) == 5
    for name in names:
        p = load_profile(name)
        assert p.decision.startswith("QD ") and p.local_domains
        assert p.cite(p.size_article).startswith(p.decision)


def test_default_profile_holds_the_regulation_numbers() -> None:
    p = load_profile("ninhbinh-162-2025")
    assert (p.ratelimit_limit, p.ratelimit_window_s) == (250, 600.0)
    assert p.attachments_max_bytes == 30 * 1024 * 1024
    assert p.cite(p.ratelimit_article) == "QD 162/2025/QD-UBND Dieu 7.2.b"


# --- checked at start, not at first use (issue 9) ---------------------------------------------

@pytest.mark.parametrize("text,message", [
    pytest.param('[antivirus]\nclamd = "/run/clamav/clamd.ctl"\n',
                 "antivirus.clamd: '/run/clamav/clamd.ctl': expected inet:HOST:PORT or "
                 "unix:/PATH", id="clamd-no-type"),
    pytest.param('[antivirus]\nclamd = "tcp:127.0.0.1:3310"\n', "antivirus.clamd: ",
                 id="clamd-tcp"),
    pytest.param('[antivirus]\nclamd = "inet:127.0.0.1:3310a"\n',
                 "antivirus.clamd: 'inet:127.0.0.1:3310a': port must be a number 1..65535",
                 id="clamd-port-typo"),
    pytest.param('[antivirus]\nclamd = "unix:run/clamd.ctl"\n', "absolute path",
                 id="clamd-relative"),
    pytest.param('[antivirus]\nclamd = "inet:::1:3310"\n', "brackets", id="clamd-bare-v6"),
    pytest.param('[milter]\nlisten = "unix:/' + "d" * 120 + '"\n', "longer than 107 bytes",
                 id="milter-listen-too-long"),
    pytest.param('[policyd]\nsocket_mode = "0x660"\n', "policyd.socket_mode: '0x660': "
                 "expected an octal mode", id="policyd-mode-hex"),
    pytest.param('[milter]\nsocket_mode = "0668"\n', "milter.socket_mode: '0668'",
                 id="milter-mode-not-octal"),
    pytest.param('[milter]\nsocket_mode = "rw-rw----"\n', "milter.socket_mode",
                 id="milter-mode-symbolic"),
    pytest.param('[milter]\nsocket_mode = "4770"\n', "at most 0777", id="milter-mode-setuid"),
])
def test_sockets_are_checked_at_start(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("antivirus.clamd", "unix:/run/clamav/clamd.ctl"),
    ("antivirus.clamd", "inet:127.0.0.1:3310"),
    ("antivirus.clamd", "inet:[::1]:3310"),
    ("antivirus.clamd", "inet:localhost:3310"),
    ("policyd.socket_mode", "0660"),
    ("milter.socket_mode", "660"),
    ("milter.socket_mode", "0600"),
])
def test_good_socket_settings_load(key: str, value: str) -> None:
    assert load_config(None, {key: value})[key] == value


def test_config_check_command_reports_a_clamd_typo(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from mailwarden.cli import main

    path = write(tmp_path, '[antivirus]\nclamd = "inet:127.0.0.1"\n')
    assert main(["config", "check", "-c", str(path)]) != 0
    err = capsys.readouterr().err
    assert f"{path}: antivirus.clamd: 'inet:127.0.0.1': expected inet:HOST:PORT" in err


def test_one_parser_for_postfix_socket_notation() -> None:
    from mailwarden.addresses import ListenAddress, parse_listen
    from mailwarden.clients import clamd

    assert clamd.ClamdAddress is ListenAddress
    assert clamd.parse_address("inet:[::1]:3310") == parse_listen("inet:[::1]:3310")
