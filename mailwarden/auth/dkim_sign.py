"""DKIM signing of what our senders send (RFC 6376, RFC 8463), and key generation.

Keys come from `[[dkim.keys]]` tables (`domain`, `selector`, `key_file`,
optional `algorithm` = "rsa-sha256" (default) or "ed25519-sha256"). A domain
with one key of each algorithm gets both signatures (dual signing). `load_keys`
runs at start and fails with the table, file and reason when a key is missing,
unreadable or unusable: each key signs a test message before it is accepted.

Signatures use relaxed/relaxed canonicalization (robust against re-folding by
relays) and the header fields RFC 6376 5.4.1 recommends, those present in the
message. The fields a reader relies on (OVERSIGNED) are signed once more than
they occur, absent ones included (RFC 6376 5.4.2, 8.15): no From, To, Subject,
Reply-To, ... can be added to a replayed message without breaking the signature.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailwarden.auth import canon
from mailwarden.auth.results import HeaderField

canon.install()  # linear body canonicalisation (auth/canon.py)

# Signed once more than they occur, present or not (RFC 6376 8.15).
OVERSIGNED = (b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date",
              b"message-id", b"in-reply-to", b"references", b"mime-version",
              b"content-type", b"content-transfer-encoding", b"resent-from",
              b"resent-sender", b"resent-to", b"resent-cc", b"resent-date")

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
TABLE_KEYS = ("domain", "selector", "key_file", "algorithm")
RSA_BITS = 2048
MIN_RSA_BITS = 1024  # RFC 8301: never sign with less
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
_TEST_MESSAGE = (b"From: test@example.invalid\r\nTo: test@example.invalid\r\n"
                 b"Subject: key check\r\n\r\nkey check\r\n")


class DkimKeyError(ValueError):
    """A [[dkim.keys]] entry that cannot be used, phrased for the operator."""


class DkimSignError(RuntimeError):
    """A message dkimpy would not sign (no From: field, ...)."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str
    key_file: str
    bits: int  # RSA modulus size; 256 for ed25519
    public_b64: str  # the p= value to publish
    private: bytes = field(repr=False)  # what dkimpy takes: PKCS#1 PEM, or base64 ed25519 seed

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def txt_value(self) -> str:
        return txt_value(self.algorithm, self.public_b64)


def txt_value(algorithm: str, public_b64: str) -> str:
    kind = "ed25519" if algorithm.startswith("ed25519") else "rsa"
    return f"v=DKIM1; k={kind}; p={public_b64}"


def zone_line(dns_name: str, value: str, ttl: int = 3600) -> str:
    """A master-file TXT record, the value cut into strings of at most 255 octets."""
    chunks = [value[i:i + 250] for i in range(0, len(value), 250)]
    quoted = " ".join(f'"{c}"' for c in chunks)
    return f"{dns_name}. {ttl} IN TXT ( {quoted} )"


def check_key_tables(value: Any) -> None:
    """Schema check of `dkim.keys` (shape only; `load_keys` reads the files)."""
    if not isinstance(value, list):
        raise ValueError("must be a list of [[dkim.keys]] tables")
    for i, entry in enumerate(value, 1):
        _table(entry, i)


def _table(entry: Any, i: int) -> tuple[str, str, str, str]:
    where = f"[[dkim.keys]] #{i}"
    if not isinstance(entry, Mapping):
        raise DkimKeyError(f"{where}: must be a table with domain, selector, key_file")
    unknown = sorted(set(entry) - set(TABLE_KEYS))
    if unknown:
        raise DkimKeyError(f"{where}: unknown key(s) {', '.join(unknown)} "
                           f"(known: {', '.join(TABLE_KEYS)})")
    for k in ("domain", "selector", "key_file"):
        if not isinstance(entry.get(k), str) or not entry[k]:
            raise DkimKeyError(f"{where}: {k} is missing or not a string")
    algorithm = entry.get("algorithm", "rsa-sha256")
    if algorithm not in ALGORITHMS:
        raise DkimKeyError(f"{where}: algorithm {algorithm!r} is not one of "
                           f"{', '.join(ALGORITHMS)}")
    domain = entry["domain"].lower().rstrip(".")
    selector = entry["selector"]
    if not all(_LABEL.fullmatch(x) for x in selector.split(".")):
        raise DkimKeyError(f"{where}: selector {selector!r} is not a DNS label")
    if not all(_LABEL.fullmatch(x) for x in domain.split(".")) or "." not in domain:
        raise DkimKeyError(f"{where}: domain {domain!r} is not a domain name")
    return domain, selector, entry["key_file"], algorithm


def _read_rsa(data: bytes, where: str) -> tuple[bytes, int, str]:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DkimKeyError(f"{where}: the key is encrypted; store it unencrypted, "
                           "mode 0600") from None
    except ValueError as e:
        raise DkimKeyError(f"{where}: not a PEM private key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"{where}: algorithm rsa-sha256 needs an RSA key, this is "
                           f"{type(key).__name__}")
    if key.key_size < MIN_RSA_BITS:
        raise DkimKeyError(f"{where}: RSA key of {key.key_size} bits; at least "
                           f"{MIN_RSA_BITS} (RFC 8301), {RSA_BITS} recommended")
    pkcs1 = key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return pkcs1, key.key_size, base64.b64encode(public).decode("ascii")


def _read_ed25519(data: bytes, where: str) -> tuple[bytes, int, str]:
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (TypeError, ValueError) as e:
            raise DkimKeyError(f"{where}: not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DkimKeyError(f"{where}: algorithm ed25519-sha256 needs an Ed25519 key")
    else:  # dkimpy's format: the 32-byte seed in base64 on one line
        try:
            seed = base64.b64decode(data.strip(), validate=True)
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        except ValueError:
            raise DkimKeyError(f"{where}: expected a base64 Ed25519 seed (32 bytes) or "
                               "a PEM key") from None
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    return base64.b64encode(seed), 256, base64.b64encode(public).decode("ascii")


def load_key(entry: Mapping[str, Any], i: int = 1) -> DkimKey:
    domain, selector, key_file, algorithm = _table(entry, i)
    where = f"[[dkim.keys]] #{i} ({domain} {selector}): {key_file}"
    try:
        data = Path(key_file).read_bytes()
    except FileNotFoundError:
        raise DkimKeyError(f"{where}: no such file (make one with `mailwarden dkim keygen "
                           f"{domain} {selector}`)") from None
    except PermissionError:
        raise DkimKeyError(f"{where}: permission denied (the key must be readable by "
                           "the service user)") from None
    except OSError as e:
        raise DkimKeyError(f"{where}: cannot read: {e.strerror or e}") from None
    reader = _read_rsa if algorithm == "rsa-sha256" else _read_ed25519
    private, bits, public = reader(data, where)
    key = DkimKey(domain, selector, algorithm, key_file, bits, public, private)
    try:
        _sign_one(_TEST_MESSAGE, key)
    except (dkim.DKIMException, DkimSignError) as e:
        raise DkimKeyError(f"{where}: dkimpy cannot sign with this key: {e}") from None
    return key


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[DkimKey, ...] = ()
    warnings: tuple[str, ...] = ()  # to log at start: weak or readable-by-others keys

    def for_domain(self, domain: str) -> tuple[DkimKey, ...]:
        """Keys for `domain`, else for its closest parent domain that has keys."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            found = tuple(k for k in self.keys if k.domain == candidate)
            if found:
                return found
        return ()

    def sign(self, message: bytes, domain: str) -> list[HeaderField]:
        """DKIM-Signature fields for `message` by `domain`'s keys ([] when it has none)."""
        return [_sign_one(message, key) for key in self.for_domain(domain)]


def load_keys(tables: Sequence[Mapping[str, Any]]) -> KeyRing:
    """Every [[dkim.keys]] entry, read and test-signed; DkimKeyError on the first bad one."""
    keys: list[DkimKey] = []
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(tables, 1):
        key = load_key(entry, i)
        if (key.domain, key.selector) in seen:
            raise DkimKeyError(f"[[dkim.keys]] #{i}: {key.domain} selector {key.selector} "
                               "is configured twice")
        if any(k.domain == key.domain and k.algorithm == key.algorithm for k in keys):
            raise DkimKeyError(f"[[dkim.keys]] #{i}: {key.domain} has two {key.algorithm} "
                               "keys; one of each algorithm at most")
        seen.add((key.domain, key.selector))
        keys.append(key)
        if key.algorithm == "rsa-sha256" and key.bits < RSA_BITS:
            warnings.append(f"DKIM key {key.key_file} ({key.domain}) is {key.bits} bits; "
                            f"{RSA_BITS} is recommended")
        mode = os.stat(key.key_file).st_mode
        if mode & 0o077:
            warnings.append(f"DKIM key {key.key_file} is readable by group or others "
                            f"(mode {mode & 0o777:04o}); make it 0600")
    return KeyRing(tuple(keys), tuple(warnings))


def _sign_one(message: bytes, key: DkimKey) -> HeaderField:
    signer = dkim.DKIM(message, signature_algorithm=key.algorithm.encode("ascii"),
                       linesep=b"\r\n")
    if not any(name.lower() == b"from" for name, _ in signer.headers):
        raise DkimSignError("the message has no From: field (RFC 6376 5.4)")
    try:
        line = signer.sign(key.selector.encode("ascii"), key.domain.encode("ascii"),
                           key.private, canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=signed_fields(signer))
    except dkim.ParameterError as e:
        raise DkimSignError(str(e)) from None
    name, _, value = line.decode("ascii").partition(":")
    return HeaderField(name, value.strip(" ").rstrip("\r\n"))


def signed_fields(signer: dkim.DKIM) -> list[bytes]:
    """h=: the recommended fields present (each occurrence), then each OVERSIGNED field
    once more (absent ones once: a null signature of their absence)."""
    present = [name.lower() for name, _ in signer.headers]
    recommended = set(signer.should_sign) | set(OVERSIGNED)
    out = [n for n in present if n in recommended]
    out.extend(OVERSIGNED)
    return out


def keygen(domain: str, selector: str, directory: str | Path, owner_user: str | None = None,
           *, algorithm: str = "rsa-sha256", bits: int = RSA_BITS) -> tuple[Path, str]:
    """Write a new private key (mode 0600) and return (its path, the TXT record to publish).

    The file is DIRECTORY/DOMAIN.SELECTOR.key and is never overwritten (replacing a
    published key breaks mail in flight: publish a new selector instead). With
    `owner_user` and that user existing, the file (and the directory, when this call
    creates it, mode 0750) is given to that user and its group.
    The record is a master-file line: "SELECTOR._domainkey.DOMAIN. 3600 IN TXT ( ... )".
    """
    domain = domain.lower().rstrip(".")
    _table({"domain": domain, "selector": selector, "key_file": "-",
            "algorithm": algorithm}, 1)
    if algorithm == "rsa-sha256":
        if bits < RSA_BITS:
            raise DkimKeyError(f"refusing to make a {bits}-bit RSA key; {RSA_BITS} or more")
        rkey = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        data = rkey.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
        public = base64.b64encode(rkey.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    else:
        ekey = ed25519.Ed25519PrivateKey.generate()
        data = base64.b64encode(ekey.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())) + b"\n"
        public = base64.b64encode(ekey.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    owner = None
    if owner_user:
        try:
            owner = pwd.getpwnam(owner_user)
        except KeyError:
            owner = None  # no such user (yet): the file stays with the caller
    directory = Path(directory)
    if not directory.is_dir():
        directory.mkdir(parents=True, mode=0o750)
        directory.chmod(0o750)  # whatever the umask
        if owner is not None:  # a directory we made: the service user must reach its key
            os.chown(directory, owner.pw_uid, owner.pw_gid)
    path = directory / f"{domain}.{selector}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DkimKeyError(f"{path} exists; keys are never overwritten (use a new "
                           "selector)") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            if owner is not None:
                os.fchown(out.fileno(), owner.pw_uid, owner.pw_gid)
            out.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    value = txt_value(algorithm, public.decode("ascii"))
    return path, zone_line(f"{selector}._domainkey.{domain}", value)
