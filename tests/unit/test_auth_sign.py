"""DKIM keys and signing: keygen, the start-time loader, sign -> verify (static DNS)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailwarden.auth.dkim_sign import (
    OVERSIGNED,
    DkimKeyError,
    DkimSignError,
    KeyRing,
    check_key_tables,
    keygen,
    load_keys,
)
from mailwarden.auth.dns import StaticLookup
from mailwarden.auth.results import Result
from mailwarden.auth.verify import verify_dkim

DOMAIN = "ninhbinh.gov.vn"
MESSAGE = (b"Received: from pc1 by mx\r\n"
           b"From: Phong Hanh Chinh <hanhchinh@ninhbinh.gov.vn>\r\n"
           b"To: doi.tac@example.org\r\n"
           b"Subject: Cong van so 12\r\n"
           b"Date: Tue, 02 Jan 2024 08:00:00 +0700\r\n"
           b"Message-ID: <cv12@ninhbinh.gov.vn>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n"
           b"Kinh gui quy co quan,\r\n\r\nNoi dung cong van.\r\n")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    keygen(DOMAIN, "rsa1", d)
    keygen(DOMAIN, "ed1", d, algorithm="ed25519-sha256")
    return d


def tables(keydir: Path, *which: str) -> list[dict[str, str]]:
    out = []
    for sel in which:
        entry = {"domain": DOMAIN, "selector": sel, "key_file": str(keydir / f"{DOMAIN}.{sel}.key")}
        if sel.startswith("ed"):
            entry["algorithm"] = "ed25519-sha256"
        out.append(entry)
    return out


def published(ring: KeyRing) -> StaticLookup:
    return StaticLookup({(k.dns_name, "TXT"): [k.txt_value()] for k in ring.keys})


def signed(ring: KeyRing, message: bytes = MESSAGE) -> bytes:
    return b"".join(f.as_bytes() for f in ring.sign(message, DOMAIN)) + message


# -- keygen --------------------------------------------------------------------

def test_keygen_writes_a_private_key_0600_and_a_publishable_record(tmp_path: Path) -> None:
    path, record = keygen("NinhBinh.gov.vn.", "mail2025", tmp_path / "dkim")
    assert path == tmp_path / "dkim" / "ninhbinh.gov.vn.mail2025.key"
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # dkimpy's PKCS#1
    # The record is a master-file line a name server (and our sandbox) loads as it is.
    zone = dns.zone.from_text("$TTL 300\n" + record, origin="ninhbinh.gov.vn.",
                              relativize=False, check_origin=False)
    (rds,) = zone.find_node("mail2025._domainkey.ninhbinh.gov.vn.").rdatasets
    value = b"".join(next(iter(rds)).strings).decode()
    assert all(len(s) <= 255 for s in next(iter(rds)).strings)
    ring = load_keys([{"domain": DOMAIN, "selector": "mail2025", "key_file": str(path)}])
    assert value == ring.keys[0].txt_value() == f"v=DKIM1; k=rsa; p={ring.keys[0].public_b64}"


def test_keygen_ed25519(tmp_path: Path) -> None:
    path, record = keygen(DOMAIN, "ed2025", tmp_path, algorithm="ed25519-sha256")
    assert os.stat(path).st_mode & 0o777 == 0o600
    (ring_key,) = load_keys([{"domain": DOMAIN, "selector": "ed2025", "key_file": str(path),
                              "algorithm": "ed25519-sha256"}]).keys
    assert f'"v=DKIM1; k=ed25519; p={ring_key.public_b64}"' in record
    assert len(ring_key.public_b64) == 44  # 32 bytes (RFC 8463)


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    path, _ = keygen(DOMAIN, "s1", tmp_path)
    before = path.read_bytes()
    with pytest.raises(DkimKeyError, match="never overwritten"):
        keygen(DOMAIN, "s1", tmp_path)
    assert path.read_bytes() == before


def test_keygen_gives_the_file_to_the_service_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        pytest.fail("run as root: chown to another user needs it (make test does)")
    path, _ = keygen(DOMAIN, "s1", tmp_path / "dkim", owner_user="nobody")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o600)
    st = os.stat(tmp_path / "dkim")  # made by keygen: the service user can reach its keys
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o750)
    assert os.stat(tmp_path).st_uid == os.geteuid()  # an existing directory is left alone
    path2, _ = keygen(DOMAIN, "s2", tmp_path, owner_user="no-such-user-mailwarden")
    assert os.stat(path2).st_uid == os.geteuid()


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"bits": 1024}, "refusing to make a 1024-bit"),
    ({"algorithm": "rsa-sha1"}, "not one of"),
])
def test_keygen_refuses_weak_or_unknown(tmp_path: Path, kwargs: dict[str, Any],
                                        why: str) -> None:
    with pytest.raises(DkimKeyError, match=why):
        keygen(DOMAIN, "s1", tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


# -- loading at start ----------------------------------------------------------

def _write(path: Path, data: bytes, mode: int = 0o600) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def _pem(key: Any, fmt: serialization.PrivateFormat,
         enc: serialization.KeySerializationEncryption | None = None) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, fmt,
                                   enc or serialization.NoEncryption()))


def test_loader_failures_name_the_entry_the_file_and_the_reason(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    small = subprocess.run(["openssl", "genrsa", "-traditional", "768"], check=True,
                           capture_output=True).stdout
    files = {
        "missing": str(tmp_path / "nope.key"),
        "directory": str(tmp_path),
        "garbage": _write(tmp_path / "garbage.key", b"not a key\n"),
        "encrypted": _write(tmp_path / "enc.key", _pem(
            rsa_key, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))),
        "ec": _write(tmp_path / "ec.key", _pem(ec.generate_private_key(ec.SECP256R1()),
                                               serialization.PrivateFormat.PKCS8)),
        "small": _write(tmp_path / "small.key", small),
        "rsa": _write(tmp_path / "rsa.key", _pem(rsa_key,
                                                 serialization.PrivateFormat.PKCS8)),
    }
    cases = [
        ({"key_file": files["missing"]}, "nope.key: no such file .*dkim keygen"),
        ({"key_file": files["directory"]}, "cannot read"),
        ({"key_file": files["garbage"]}, "not a PEM private key"),
        ({"key_file": files["encrypted"]}, "the key is encrypted"),
        ({"key_file": files["ec"]}, "needs an RSA key"),
        ({"key_file": files["small"]}, "768 bits; at least 1024"),
        ({"key_file": files["rsa"], "algorithm": "ed25519-sha256"}, "Ed25519"),
        ({"key_file": files["garbage"], "algorithm": "ed25519-sha256"}, "base64 Ed25519 seed"),
        ({"key_file": files["rsa"], "algorithm": "rsa"}, "algorithm 'rsa' is not one of"),
        ({"key_file": files["rsa"], "selctor": "x"}, "unknown key.*selctor"),
        ({"key_file": files["rsa"], "selector": "bad selector"}, "not a DNS label"),
        ({"key_file": files["rsa"], "domain": "localhost"}, "not a domain name"),
        ({"key_file": 42}, "key_file is missing or not a string"),
    ]
    for override, why in cases:
        entry = {"domain": DOMAIN, "selector": "s1", **override}
        with pytest.raises(DkimKeyError, match=f"#1.*{why}"):
            load_keys([entry])
    with pytest.raises(DkimKeyError, match="must be a table"):
        load_keys(["ninhbinh.gov.vn"])  # type: ignore[list-item]


def test_loader_accepts_pkcs8_and_pem_ed25519_and_warns_about_open_modes(tmp_path: Path,
                                                                         keydir: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the warning
    pkcs8 = _write(tmp_path / "p8.key", _pem(rsa_key, serialization.PrivateFormat.PKCS8),
                   0o644)
    ed_pem = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"], check=True,
                            capture_output=True).stdout
    ed = _write(tmp_path / "ed.pem", ed_pem)
    ring = load_keys([{"domain": DOMAIN, "selector": "a", "key_file": pkcs8},
                      {"domain": DOMAIN, "selector": "b", "key_file": ed,
                       "algorithm": "ed25519-sha256"}])
    assert [k.bits for k in ring.keys] == [1024, 256]
    assert any("1024 bits; 2048 is recommended" in w for w in ring.warnings)
    assert any("p8.key is readable by group or others (mode 0644)" in w for w in ring.warnings)
    assert len(ring.warnings) == 2
    assert {c.result for c in verify_dkim(signed(ring), published(ring))} == {Result.PASS}


def test_duplicates_are_refused(keydir: Path) -> None:
    entry = tables(keydir, "rsa1")[0]
    with pytest.raises(DkimKeyError, match=r"#2.*configured twice"):
        load_keys([entry, entry])
    other = {**entry, "selector": "rsa2"}
    with pytest.raises(DkimKeyError, match="two rsa-sha256 keys"):
        load_keys([entry, other])


def test_unreadable_key_is_a_start_error_for_the_service_user(keydir: Path) -> None:
    """Load a root-owned 0600 key as `nobody` (root itself reads everything)."""
    if os.geteuid() != 0:
        pytest.fail("run as root: the test switches its effective user to nobody")
    nobody = pwd.getpwnam("nobody")
    d = Path(tempfile.mkdtemp(prefix="mailwarden-key-"))
    try:
        d.chmod(0o711)  # nobody may reach the file, not read it
        key = d / "k.key"
        key.write_bytes((keydir / f"{DOMAIN}.rsa1.key").read_bytes())
        key.chmod(0o600)
        entry = {"domain": DOMAIN, "selector": "rsa1", "key_file": str(key)}
        os.seteuid(nobody.pw_uid)
        try:
            with pytest.raises(DkimKeyError, match=re.escape(
                    "k.key: permission denied (the key must be readable by the service "
                    "user)")):
                load_keys([entry])
        finally:
            os.seteuid(0)
        assert load_keys([entry]).keys[0].key_file == str(key)  # root can: it was the mode
    finally:
        shutil.rmtree(d)


def test_config_shape_check() -> None:
    check_key_tables([])
    check_key_tables([{"domain": DOMAIN, "selector": "s", "key_file": "/x"}])
    with pytest.raises(ValueError, match="list of"):
        check_key_tables({"domain": DOMAIN})
    with pytest.raises(ValueError, match="#2: selector is missing"):
        check_key_tables([{"domain": DOMAIN, "selector": "s", "key_file": "/x"},
                          {"domain": DOMAIN, "key_file": "/x"}])


# -- signing -------------------------------------------------------------------

@pytest.mark.parametrize("selectors", [("rsa1",), ("ed1",), ("rsa1", "ed1")],
                         ids=["rsa", "ed25519", "dual"])
def test_sign_then_verify(keydir: Path, selectors: tuple[str, ...]) -> None:
    ring = load_keys(tables(keydir, *selectors))
    fields = ring.sign(MESSAGE, DOMAIN)
    assert [f.name for f in fields] == ["DKIM-Signature"] * len(selectors)
    checks = verify_dkim(signed(ring), published(ring))
    assert [(c.result, c.domain, c.selector) for c in checks] == [
        (Result.PASS, DOMAIN, s) for s in selectors]
    assert [c.algorithm for c in checks] == [
        "ed25519-sha256" if s.startswith("ed") else "rsa-sha256" for s in selectors]


def test_signature_header_set_and_canonicalization(keydir: Path) -> None:
    ring = load_keys(tables(keydir, "rsa1"))
    (field,) = ring.sign(MESSAGE, DOMAIN)
    value = " ".join(field.value.split())
    assert "c=relaxed/relaxed;" in value and "a=rsa-sha256;" in value
    h = value.split(" h=")[1].split(";")[0].replace(" ", "").split(":")
    # RFC 6376 5.4.1's fields that are present; then every field a reader relies on once
    # more, present or absent (over-signed, RFC 6376 8.15); Received (SHOULD NOT) left out.
    assert h[:7] == ["from", "to", "subject", "date", "message-id", "mime-version",
                     "content-type"]
    assert h[7:] == [n.decode() for n in OVERSIGNED]
    assert "received" not in h


def test_tampering_breaks_the_signature(keydir: Path) -> None:
    ring = load_keys(tables(keydir, "rsa1", "ed1"))
    good = signed(ring)
    lookup = published(ring)
    body = good.replace(b"Noi dung cong van.", b"Noi dung da sua.")
    assert {c.result for c in verify_dkim(body, lookup)} == {Result.FAIL}
    subject = good.replace(b"Cong van so 12", b"Cong van so 13")
    assert {c.result for c in verify_dkim(subject, lookup)} == {Result.FAIL}
    extra_from = good.replace(b"To: doi.tac", b"From: ke.gia@ninhbinh.gov.vn\r\nTo: doi.tac")
    assert {c.result for c in verify_dkim(extra_from, lookup)} == {Result.FAIL}
    # Relaxed canonicalization: re-folding and trailing spaces do not matter.
    refolded = good.replace(b"Subject: Cong van so 12", b"Subject: Cong van\r\n  so 12")
    refolded = refolded.replace(b"Noi dung cong van.\r\n", b"Noi dung  cong van.   \r\n")
    assert {c.result for c in verify_dkim(refolded, lookup)} == {Result.PASS}


def test_keys_of_the_parent_domain_sign_for_subdomains(keydir: Path) -> None:
    ring = load_keys(tables(keydir, "rsa1"))
    assert ring.for_domain("skhcn." + DOMAIN) == ring.keys
    assert ring.for_domain("NINHBINH.GOV.VN.") == ring.keys
    assert ring.for_domain("gov.vn") == ()
    assert ring.for_domain("example.org") == ()
    assert ring.sign(MESSAGE, "example.org") == []


def test_a_message_without_from_cannot_be_signed(keydir: Path) -> None:
    ring = load_keys(tables(keydir, "rsa1"))
    with pytest.raises(DkimSignError, match="From"):
        ring.sign(b"To: a@example.org\r\nSubject: x\r\n\r\nbody\r\n", DOMAIN)
