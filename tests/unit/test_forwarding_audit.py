"""mailwarden/audit/: configured forwards to private mailboxes (issue #4 item 3).

The acceptance test builds a real private Postfix configuration directory
(the sandbox's main.cf) with real hash maps made by postmap/postalias, plus
.forward files and Sieve scripts, and checks that exactly the three bad
forwards are reported. Postfix is not started: postconf -c and postmap -s
work on a config directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.postfix import PostfixInstance
from mailwarden.audit import command, sources
from mailwarden.audit.aliases import MAX_INCLUDE_DEPTH, Names, expand_targets, split_targets
from mailwarden.audit.findings import (
    FORWARD,
    NOT_INSPECTABLE,
    AuditError,
    AuditFinding,
    owner_from_path,
    path_parts,
)
from mailwarden.audit.forward_files import forward_file_findings
from mailwarden.audit.postfix_maps import (
    PAIRS,
    POSTMAP,
    TEXTHASH,
    UNREADABLE,
    MapLeaf,
    map_leaves,
    pair_findings,
    postconf_values,
    postmap_error,
    postmap_pairs,
    split_map_list,
    text_pairs,
)
from mailwarden.audit.sieve import sieve_findings, sieve_redirects
from mailwarden.config import load_config
from mailwarden.rules.forwarding import ForwardSettings
from mailwarden.settings import Settings

CITATION = "QD 162/2025/QD-UBND Dieu 4.5"


def values(**over: Any) -> dict[str, Any]:
    return {"forwarding.state_allow": ["chinhphu.vn"], **over}


S: ForwardSettings = Settings.from_config(load_config(None, values())).content.forwarding


def postfix_dir(tmp: Path, virtual: str, aliases: str, **extra: str) -> Path:
    """A Postfix config directory (never started) with hash: virtual and alias maps."""
    pf = PostfixInstance(tmp / "postfix", relay_port=25, main_cf_extra={
        "virtual_alias_maps": f"hash:{tmp}/postfix/etc/virtual",
        "alias_maps": f"hash:{tmp}/postfix/etc/aliases",
        "myorigin": "ninhbinh.gov.vn", **extra})
    pf.write_config()
    # Postfix waits (in 0.3 s steps) until a just-written main.cf is a second old.
    old = time.time() - 5
    os.utime(pf.config_dir / "main.cf", (old, old))
    (pf.config_dir / "virtual").write_text(virtual)
    (pf.config_dir / "aliases").write_text(aliases)
    for tool, name in (("postmap", "virtual"), ("postalias", "aliases")):
        subprocess.run([tool, "-c", str(pf.config_dir), f"hash:{pf.config_dir}/{name}"],
                       check=True, capture_output=True, timeout=30)
    return pf.config_dir


VIRTUAL = """\
# virtual_alias_maps of the province
user@ninhbinh.gov.vn        someone@gmail.com
bob@ninhbinh.gov.vn         carol@ninhbinh.gov.vn
lan@ninhbinh.gov.vn         lan@hanoi.gov.vn, lan@sotc.ninhbinh.gov.vn
# a private domain we relay for: not a forward from one of our mailboxes
info@partner.example        partner.info@gmail.com
vanthu@ninhbinh.gov.vn      vanthu@chinhphu.vn
"""
ALIASES = """\
postmaster: root
ketoan: ketoan@ninhbinh.gov.vn,
\tthuquy
backup: /var/backups/mail
report: "|/usr/local/bin/report"
"""


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    for user in ("bob", "carol", "dung", "an"):
        (home / user / "sieve").mkdir(parents=True)
    (home / "bob" / ".forward").write_text("# personal copy\nbob.personal@yahoo.com\n")
    (home / "carol" / ".forward").write_text("\\carol, carol@hanoi.gov.vn\n"
                                             '"|/usr/bin/procmail"\n')
    (home / "dung" / "sieve" / "roundcube.sieve").write_text(
        'require ["copy", "fileinto"];\n'
        "# rule:[forward to home]\n"
        'if true\n{\n\tredirect :copy "dung.home@outlook.com";\n}\n'
        "# rule:[disabled]\n"
        '# redirect "old.home@gmail.com";\n'
        '/* redirect "another@gmail.com"; */\n'
        'if header :contains "subject" "hop" { redirect "an@ninhbinh.gov.vn"; }\n'
        'if header :contains "subject" "redirect \\"x@gmail.com\\";" { keep; }\n')
    (home / "an" / "sieve" / "vacation.sieve").write_text(
        'require "vacation";\nvacation :days 1 "Toi dang nghi phep";\n')
    (home / "an" / ".dovecot.sieve").symlink_to(home / "an" / "sieve" / "vacation.sieve")
    (home / "dung" / ".dovecot.sieve").symlink_to(home / "dung" / "sieve" / "roundcube.sieve")
    return {"home": home, "postfix": postfix_dir(tmp_path, VIRTUAL, ALIASES)}


def run_audit(tree: dict[str, Any]) -> list[AuditFinding]:
    home = tree["home"]
    return sources.audit(S, postconf_dir=str(tree["postfix"]),
                    forward_globs=[f"{home}/*/.forward"],
                    sieve_globs=[f"{home}/*/sieve", f"{home}/*/.dovecot.sieve"])


def test_exactly_the_three_bad_forwards(tree: dict[str, Any]) -> None:
    findings = run_audit(tree)
    home = tree["home"]
    assert [f.kind for f in findings] == [FORWARD] * 3, [f.line() for f in findings]
    got = {(f.source, f.mailbox, f.target, f.location) for f in findings}
    assert got == {
        ("virtual_alias_maps", "user@ninhbinh.gov.vn", "someone@gmail.com",
         f"hash:{tree['postfix']}/virtual"),
        (".forward", "bob@ninhbinh.gov.vn", "bob.personal@yahoo.com", f"{home}/bob/.forward:2"),
        ("sieve", "dung@ninhbinh.gov.vn", "dung.home@outlook.com",
         f"{home}/dung/sieve/roundcube.sieve:5"),
    }
    assert all(f.rule == "forward.external_auto" for f in findings)
    sieve = next(f for f in findings if f.source == "sieve")
    assert sieve.detail == "redirect :copy"


def cli(argv: list[str], cfg: dict[str, Any]) -> tuple[int, argparse.Namespace]:
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    args = p.parse_args(argv)
    settings = Settings.from_config(load_config(None, cfg))
    return command.main(args, settings.content.forwarding, settings.audit), args


def test_command_exit_codes_and_output(tree: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = tree["home"]
    cfg = values(**{"forwarding.postfix_config_dir": str(tree["postfix"]),
                    "forwarding.forward_files": [f"{home}/*/.forward"],
                    "forwarding.sieve_scripts": [f"{home}/*/sieve"]})
    code, _ = cli([], cfg)
    out = capsys.readouterr().out
    assert code == 1
    assert "forward.external_auto: user@ninhbinh.gov.vn -> someone@gmail.com  " \
        f"[virtual_alias_maps hash:{tree['postfix']}/virtual]" in out
    assert f"3 automatic forward(s) from a local mailbox to a private address ({CITATION})" in out

    code, _ = cli(["--json"], cfg)
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and len(doc["forwards"]) == 3 and doc["not_inspectable"] == []

    # Only the clean sources: exit 0.
    code, _ = cli(["--no-postfix", "--forward-files", f"{home}/carol/.forward",
                   "--sieve", f"{home}/an/sieve"], cfg)
    assert code == 0 and "0 automatic forward(s)" in capsys.readouterr().out

    # A directory without main.cf is a usage error, not "nothing found".
    code, _ = cli(["--postfix-config", str(home)], cfg)
    assert code == 2 and "main.cf" in capsys.readouterr().err


def test_map_types_postfix_cannot_list(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    maps = (f"proxy:hash:{tmp_path}/postfix/etc/virtual, "
            f"texthash:{tmp_path}/extra, "
            "inline:{ { ops@ninhbinh.gov.vn = ops@ninhbinh.gov.vn, ops.team@gmail.com }, "
            "x@ninhbinh.gov.vn = x@ninhbinh.gov.vn }, "
            f"ldap:{tmp_path}/ldap-forwarding.cf, "
            f"unionmap:{{regexp:{tmp_path}/re, hash:{tmp_path}/missing}}")
    (tmp_path / "extra").write_text("@sotc.ninhbinh.gov.vn  catchall@outlook.com\n")
    cfg_dir = postfix_dir(tmp_path, "a@ninhbinh.gov.vn a@yahoo.com\n", "",
                          virtual_alias_maps=maps, alias_maps="")
    findings = sources.audit(S, postconf_dir=str(cfg_dir))
    forwards = {(f.mailbox, f.target) for f in findings if f.kind == FORWARD}
    assert forwards == {("a@ninhbinh.gov.vn", "a@yahoo.com"),
                        ("@sotc.ninhbinh.gov.vn", "catchall@outlook.com"),
                        ("ops@ninhbinh.gov.vn", "ops.team@gmail.com")}
    blind = {f.location.split(":")[0]: f.detail for f in findings
             if f.kind == NOT_INSPECTABLE}
    assert set(blind) == {"ldap", "regexp", "hash"}
    assert "cannot be listed" in blind["ldap"] and "cannot be listed" in blind["regexp"]
    assert "missing" in blind["hash"]  # postmap's own words about the absent database

    code, _ = cli(["--postfix-config", str(cfg_dir), "--forward-files", "/nonexistent/*",
                   "--sieve", "/nonexistent/*"], values())
    assert code == 1
    code, _ = cli(["--postfix-config", str(tmp_path / "postfix" / "etc"), "--strict",
                   "--forward-files", "/nonexistent/*", "--sieve", "/nonexistent/*"], values())
    assert code == 1
    assert "not inspectable: ldap:" in capsys.readouterr().out


def test_static_catch_all_and_aliases_include(tmp_path: Path) -> None:
    (tmp_path / "list.inc").write_text("# members\nan@ninhbinh.gov.vn\nan.home@gmail.com\n")
    cfg_dir = postfix_dir(tmp_path, "", f"doan: :include:{tmp_path}/list.inc\n",
                          virtual_alias_maps="static:archive@mailstore.example")
    got = {(f.source, f.mailbox, f.target, f.detail)
           for f in sources.audit(S, postconf_dir=str(cfg_dir)) if f.kind == FORWARD}
    assert got == {
        ("virtual_alias_maps", "*@ninhbinh.gov.vn (every address)", "archive@mailstore.example",
         ""),
        ("alias_maps", "doan@ninhbinh.gov.vn", "an.home@gmail.com",
         f"via :include:{tmp_path}/list.inc"),
    }


def test_postconf_failure_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("")
    with pytest.raises(AuditError):
        sources.audit(S, postconf_dir=str(tmp_path), postconf="/nonexistent/postconf")
    with pytest.raises(AuditError):
        sources.audit(S, postconf_dir=str(tmp_path / "nowhere"))


# -- parsers -------------------------------------------------------------------------------
@pytest.mark.parametrize("script,expected", [
    ('redirect "a@gmail.com";', [("a@gmail.com", 1, ())]),
    ('redirect :copy "a@gmail.com";', [("a@gmail.com", 1, (":copy",))]),
    ('redirect :notify "success,failure" :ret "hdrs" "a@gmail.com";',
     [("a@gmail.com", 1, (":notify", ":ret"))]),
    ('REDIRECT "<A@Gmail.com>" ;', [("A@Gmail.com", 1, ())]),
    ('# redirect "a@gmail.com";\nkeep;', []),
    ('/* redirect "a@gmail.com";\n redirect "b@gmail.com"; */\nredirect "c@x.vn";',
     [("c@x.vn", 3, ())]),
    ('if header :is "x" "y" {\n  redirect "a@gmail.com"; stop;\n} else { redirect "b@x.vn"; }',
     [("a@gmail.com", 2, ()), ("b@x.vn", 3, ())]),
    ('if header :contains "subject" "redirect \\"a@gmail.com\\";" { keep; }', []),
    ('redirect text:\na@gmail.com\n.\n;', [("a@gmail.com", 1, ())]),
    ('set "to" "a@gmail.com";\nredirect "${to}";', [("", 2, ())]),
    ('redirect :list "https://lists.example/x";', [("", 1, (":list",))]),
    ('redirect;', [("", 1, ())]),
], ids=["plain", "copy", "dsn-tags", "case-and-brackets", "hash-comment", "block-comment",
        "inside-if-else", "word-in-a-string", "text-string", "variables", "list", "no-address"])
def test_sieve_redirects(script: str, expected: list[tuple[str, int, tuple[str, ...]]]) -> None:
    got = [(r.address, r.line, r.tags) for r in sieve_redirects(script)]
    assert got == expected
    for r in sieve_redirects(script):
        assert bool(r.problem) == (r.address == "")


@pytest.mark.parametrize("path,pattern,owner", [
    ("/home/alice/.forward", "/home/*/.forward", "alice@ninhbinh.gov.vn"),
    ("/home/alice/sieve/a.sieve", "/home/*/sieve", "alice@ninhbinh.gov.vn"),
    ("/var/vmail/ninhbinh.gov.vn/bob/sieve/x.sieve", "/var/vmail/*/*/sieve",
     "bob@ninhbinh.gov.vn"),
    ("/srv/sieve/carol@ninhbinh.gov.vn.sieve", "/srv/sieve/*.sieve",
     "carol@ninhbinh.gov.vn"),
    ("/srv/sieve/user-dung.sieve", "/srv/sieve/user-*.sieve", "dung@ninhbinh.gov.vn"),
    ("/srv/users/dung/.forward", "/srv/users/dung/.forward", "dung@ninhbinh.gov.vn"),
], ids=["home", "sieve-dir", "vmail-domain-dir", "address-in-name", "prefix-and-suffix",
    "no-wildcard"])
def test_owner_from_path(path: str, pattern: str, owner: str) -> None:
    assert owner_from_path(path, pattern, S) == owner


def test_split_helpers() -> None:
    assert split_map_list("hash:/a, inline:{ a=b, c=d }  ldap:/x") == \
        ["hash:/a", "inline:{ a=b, c=d }", "ldap:/x"]
    assert split_targets('a@x.vn, "b c"@y.vn  \\alice,|cmd') == \
        ["a@x.vn", '"b c"@y.vn', "\\alice", "|cmd"]


# -- the package's shape: pure parsers, one module of I/O -------------------------------------
PURE = ("findings", "aliases", "postfix_maps", "forward_files", "sieve")
SYSTEM = {"subprocess", "os", "pathlib", "glob", "socket", "shutil", "io", "tempfile", "sys"}


def _imports(module: str) -> set[str]:
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", PURE)
def test_parser_modules_import_nothing_that_touches_the_system(name: str) -> None:
    imported = _imports(f"mailwarden.audit.{name}")
    assert not {i.split(".")[0] for i in imported} & SYSTEM, imported
    assert not imported & {"mailwarden.audit.sources", "mailwarden.audit.command"}


def test_the_package_init_imports_nothing() -> None:
    assert _imports("mailwarden.audit") == set()  # importing a parser loads no I/O module


@pytest.mark.parametrize("path", ["/home/alice/.forward", "relative/dir/x.sieve", "/x", "x",
                                  "a//b/./c/", "/", "../up/file"])
def test_path_parts_match_pathlib(path: str) -> None:
    from pathlib import PurePosixPath

    assert path_parts(path) == list(PurePosixPath(path).parts)


# -- pure parsers, string in, records out ------------------------------------------------------
@pytest.mark.parametrize("spec,expected", [
    ("hash:/etc/postfix/virtual", [MapLeaf("hash:/etc/postfix/virtual", POSTMAP)]),
    ("texthash:/etc/postfix/v.txt", [MapLeaf("texthash:/etc/postfix/v.txt", TEXTHASH,
                                             path="/etc/postfix/v.txt")]),
    ("inline:{ a=x@gmail.com, { b = c, d } }",
     [MapLeaf("inline:{ a=x@gmail.com, { b = c, d } }", PAIRS,
              pairs=(("a", "x@gmail.com"), ("b", "c, d")))]),
    ("static:{x@gmail.com}", [MapLeaf("static:{x@gmail.com}", PAIRS,
                                      pairs=(("*", "x@gmail.com"),))]),
    ("proxy:lmdb:/a", [MapLeaf("lmdb:/a", POSTMAP)]),
    ("unionmap:{hash:/a, inline:{k=v}}", [MapLeaf("hash:/a", POSTMAP),
                                          MapLeaf("inline:{k=v}", PAIRS, pairs=(("k", "v"),))]),
    ("proxy:proxy:proxy:proxy:proxy:hash:/a",
     [MapLeaf("proxy:hash:/a", UNREADABLE,
              detail="map type proxy cannot be listed; check it with its own tools")]),
    ("ldap:/etc/postfix/ldap.cf",
     [MapLeaf("ldap:/etc/postfix/ldap.cf", UNREADABLE,
              detail="map type ldap cannot be listed; check it with its own tools")]),
    ("/etc/postfix/virtual", [MapLeaf("/etc/postfix/virtual", UNREADABLE,
                                      detail="not a type:name map")]),
], ids=["hash", "texthash", "inline", "static", "proxy", "unionmap", "nesting-cap", "ldap",
        "no-type"])
def test_map_leaves(spec: str, expected: list[MapLeaf]) -> None:
    assert map_leaves(spec) == expected


def test_postfix_output_parsers() -> None:
    assert postconf_values(["a", "b"], "x\n\n") == {"a": "x", "b": ""}
    assert postconf_values(["a", "b"], "x\n") is None
    assert postmap_pairs("user@x.vn\tsomeone@gmail.com\nroot:\tadmin\n") == \
        [("user@x.vn", "someone@gmail.com"), ("root", "admin")]
    assert postmap_error("postmap: warning: w\npostmap: fatal: open /a.db: No such file\n") \
        == "postmap: fatal: open /a.db: No such file"
    assert postmap_error("") == "postmap -s failed"
    assert text_pairs("# c\nroot: admin,\n  boss\nalone\n") == \
        [("root", "admin, boss"), ("alone", "")]


def test_expand_targets_reads_includes_through_the_given_reader() -> None:
    files = {"/etc/a": "x@gmail.com, :include:/etc/b\n# comment\n", "/etc/b": ":include:/etc/c",
             "/etc/c": ":include:/etc/d", "/etc/d": "deep@gmail.com"}
    reads: list[str] = []

    def read(path: str) -> str | None:
        reads.append(path)
        return files.get(path)

    names = Names("ninhbinh.gov.vn")
    got = list(expand_targets('bob, "|cmd", /var/file, :include:/etc/a, :include:/missing',
                              names, read))
    assert got == [("bob@ninhbinh.gov.vn", ""), ("x@gmail.com", "via :include:/etc/a")]
    assert reads == ["/etc/a", "/etc/b", "/etc/c", "/missing"]  # /etc/d is too deep
    assert MAX_INCLUDE_DEPTH == 3


def test_forward_file_and_sieve_findings_from_text() -> None:
    text = "# personal copy\n\\bob, bob.personal@yahoo.com\n:include:/inc\n"
    got = forward_file_findings("/home/bob/.forward", text, "bob@ninhbinh.gov.vn", S,
                                {"/inc": "inc@gmail.com"}.get)
    assert [(f.kind, f.location, f.mailbox, f.target, f.detail) for f in got] == [
        (FORWARD, "/home/bob/.forward:2", "bob@ninhbinh.gov.vn", "bob.personal@yahoo.com", ""),
        (FORWARD, "/home/bob/.forward:3", "bob@ninhbinh.gov.vn", "inc@gmail.com",
         "via :include:/inc"),
    ]
    script = 'redirect :copy "A@Gmail.com";\nredirect "x@ninhbinh.gov.vn";\nredirect "${v}";\n'
    got = sieve_findings("/s/a.sieve", script, "an@ninhbinh.gov.vn", S)
    assert [(f.kind, f.location, f.target, f.detail) for f in got] == [
        (FORWARD, "/s/a.sieve:1", "a@gmail.com", "redirect :copy"),
        (NOT_INSPECTABLE, "/s/a.sieve:3", "", "address built from variables: ${v}"),
    ]


def test_pair_findings_catch_alls_and_foreign_keys() -> None:
    names = Names("ninhbinh.gov.vn")
    pairs = [("@", "x"), ("*", "all@gmail.com"), ("@ninhbinh.gov.vn", "catch@gmail.com"),
             ("info@partner.example", "p@gmail.com"), ("lan", "lan@hanoi.gov.vn")]
    got = pair_findings("virtual_alias_maps", "inline:{...}", pairs, names, S, lambda p: None)
    assert [(f.mailbox, f.target) for f in got] == [
        ("*@ninhbinh.gov.vn (every address)", "all@gmail.com"),
        ("@ninhbinh.gov.vn", "catch@gmail.com"),
    ]


def test_report_text_and_json() -> None:
    found = [AuditFinding(FORWARD, ".forward", "/h/b/.forward:1", "b@ninhbinh.gov.vn",
                          "b@gmail.com"),
             AuditFinding(NOT_INSPECTABLE, "alias_maps", "ldap:/x", detail="why")]
    assert command.report(found, "Dieu 4.5", as_json=False).splitlines() == [
        "forward.external_auto: b@ninhbinh.gov.vn -> b@gmail.com  [.forward /h/b/.forward:1]",
        "not inspectable: ldap:/x (alias_maps): why",
        "1 automatic forward(s) from a local mailbox to a private address (Dieu 4.5); "
        "1 source(s) not inspectable"]
    doc = json.loads(command.report(found, "", as_json=True))
    assert doc["citation"] == "" and doc["forwards"][0]["target"] == "b@gmail.com"
    assert doc["not_inspectable"][0]["detail"] == "why"
