"""The clean corpus: ordinary provincial mail must still pass (no false refusals).

Run after every change to inspect/: each message here is what a civil
servant sends every day (Office documents, PDFs, scans, meeting invitations,
signed mail, Outlook's winmail.dat, Vietnamese file names). mailwarden must
find nothing in any of them, and the attachment rule must refuse none.
"""

from __future__ import annotations

import base64
import io
import os
import random
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mailwarden.rules import attachments as attachment_rules
from tests.unit.inspect_corpus import TOOLS, message_executables, tnef, zip_entry, zip_from
from tests.unit.test_inspect_builders import (
    ICS,
    JPEG,
    PNG,
    attachment,
    inspect_bytes,
    mime_message,
    pdf,
    sevenzip,
    text_part,
    word_doc,
)

RULES = attachment_rules.AttachmentSettings(
    enforce=True, max_bytes=30 << 20, size_overhead=1 << 20, encrypted_documents="log",
    uninspectable="reject", size_citation="x", executable_citation="y", encrypted_citation="z")
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00" \
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def noise(n: int, seed: int = 7) -> bytes:
    """Incompressible bytes (image data, deflate streams), reproducible."""
    return random.Random(seed).randbytes(n)


def office_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def docx_full() -> bytes:
    ct = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats'
          b'.org/package/2006/content-types"><Default Extension="rels" ContentType="application/'
          b'vnd.openxmlformats-package.relationships+xml"/><Override PartName="/word/document.xml"'
          b' ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
          b'document.main+xml"/></Types>')
    return office_zip({
        "[Content_Types].xml": ct,
        "_rels/.rels": b"<Relationships/>",
        "docProps/core.xml": "<cp:coreProperties><dc:title>Báo cáo</dc:title>"
                             "</cp:coreProperties>".encode(),
        "word/document.xml": "<w:document><w:body><w:p><w:r><w:t>Kính gửi Sở Nội vụ"
                             "</w:t></w:r></w:p></w:body></w:document>".encode() * 50,
        "word/media/image1.png": PNG + noise(20_000),
        "word/media/image2.jpeg": JPEG + noise(30_000, 8),
        "word/styles.xml": b"<w:styles/>" * 100,
    })


def xlsx_full() -> bytes:
    return office_zip({
        "[Content_Types].xml": b"<Types/>",
        "_rels/.rels": b"<Relationships/>",
        "xl/workbook.xml": b"<workbook><sheets><sheet name='Tong hop'/></sheets></workbook>",
        "xl/worksheets/sheet1.xml": b"<worksheet>" + b"<row><c t='n'><v>1</v></c></row>" * 500
                                    + b"</worksheet>",
        "xl/sharedStrings.xml": "<sst><si><t>Họ và tên</t></si></sst>".encode(),
    })


def odt() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), b"application/vnd.oasis.opendocument.text")
        z.writestr("META-INF/manifest.xml", b"<manifest/>")
        z.writestr("content.xml", b"<office:document-content/>")
    return buf.getvalue()


def per_line_base64(data: bytes) -> bytes:
    """Some mailers encode each 57-byte line on its own: padding mid-body."""
    return b"\r\n".join(base64.b64encode(data[i : i + 50]) for i in range(0, len(data), 50))


def signed_message() -> bytes:
    inner = (b'Content-Type: multipart/mixed; boundary="in"\r\n\r\n--in\r\n' + text_part()
             + b"\r\n--in\r\n" + attachment(pdf(), "to-trinh.pdf") + b"\r\n--in--\r\n")
    signature = (b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
                 b"Content-Transfer-Encoding: base64\r\n"
                 b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
                 + base64.encodebytes(b"0\x82\x05\x00\x06\x09*\x86H\x86\xf7\r\x01\x07\x02"
                                      + noise(1200, 3)).replace(b"\n", b"\r\n"))
    return (b"From: a@ninhbinh.gov.vn\r\nTo: b@ninhbinh.gov.vn\r\nSubject: ky so\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; "
            b'protocol="application/pkcs7-signature"; micalg=sha-256; boundary="sig"\r\n\r\n'
            b"--sig\r\n" + inner + b"\r\n--sig\r\n" + signature + b"\r\n--sig--\r\n")


def pgp_signed_message() -> bytes:
    sig = (b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n=abcd\r\n"
           b"-----END PGP SIGNATURE-----\r\n")
    return (b"From: a@ninhbinh.gov.vn\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
            b'micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="s"\r\n\r\n'
            b"--s\r\n" + text_part() + b"\r\n--s\r\nContent-Type: application/pgp-signature; "
            b'name="signature.asc"\r\n\r\n' + sig + b"--s--\r\n")


def invitation() -> bytes:
    alternative = (b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n--alt\r\n'
                   + text_part("Moi hop giao ban") + b"\r\n--alt\r\n"
                   + b"Content-Type: text/calendar; charset=utf-8; method=REQUEST\r\n"
                   + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + ICS + b"\r\n--alt--")
    return mime_message([alternative, attachment(ICS, "invite.ics", content_type=
                                                 "application/ics")])


def forwarded() -> bytes:
    inner = mime_message([text_part(), attachment(pdf(), "cong-van.pdf")], boundary=b"fw")
    return mime_message([text_part("Chuyen tiep"),
                         b"Content-Type: message/rfc822\r\n\r\n" + inner])


def tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("bao-cao.txt", b"so lieu\n" * 100), ("anh.png", PNG)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def vietnamese_names() -> bytes:
    return mime_message([
        text_part("Kính gửi anh chị"),
        attachment(pdf(), None, disposition_params=(
            "; filename*=utf-8''B%C3%A1o%20c%C3%A1o%20qu%C3%BD%20III.pdf")),
        attachment(docx_full(), "=?UTF-8?B?VMOgaSBsaeG7h3UgaOG7jXAuZG9jeA==?="),
        attachment(xlsx_full(), "=?utf-8?Q?B=E1=BA=A3ng_l=C6=B0=C6=A1ng.xlsx?="),
        attachment(JPEG + noise(5000), None, disposition_params=(
            ";\r\n filename*0*=utf-8''%E1%BA%A2nh%20h%E1%BB%99i;"
            "\r\n filename*1=\" ngh%E1%BB%8B.jpg\"")),
    ])


CORPUS: dict[str, Callable[[], bytes]] = {
    "docx": lambda: mime_message([text_part(), attachment(docx_full(), "bao-cao.docx")]),
    "xlsx": lambda: mime_message([text_part(), attachment(xlsx_full(), "so-lieu.xlsx")]),
    "odt": lambda: mime_message([attachment(odt(), "van-ban.odt")]),
    "legacy-doc": lambda: mime_message([attachment(word_doc(), "to-trinh.doc")]),
    "pdf": lambda: mime_message([text_part(), attachment(pdf(), "cong-van.pdf"),
                                 attachment(pdf(xref_stream=True), "phu-luc.pdf")]),
    "pdf-large": lambda: mime_message([attachment(pdf(pad=200_000), "ho-so.pdf")]),
    "images": lambda: mime_message([attachment(PNG + noise(40_000), "scan.png"),
                                    attachment(JPEG + noise(40_000, 9), "anh.jpg"),
                                    attachment(GIF, "logo.gif")]),
    "calendar-invite": invitation,
    "smime-signed": signed_message,
    "pgp-signed": pgp_signed_message,
    "winmail-dat": lambda: mime_message([text_part(), attachment(
        tnef([("Bao cao thang 9.pdf", pdf()), ("Danh sach.xlsx", xlsx_full())]),
        "winmail.dat", content_type="application/ms-tnef")]),
    "vietnamese-names": vietnamese_names,
    "forwarded-message": forwarded,
    "zip-of-documents": lambda: mime_message([attachment(office_zip(
        {"Báo cáo.pdf": pdf(), "Số liệu.xlsx": xlsx_full(), "Ảnh/1.jpg": JPEG + noise(3000)}),
        "ho-so.zip")]),
    "tar-gz": lambda: mime_message([attachment(tar_gz(), "du-lieu.tar.gz")]),
    "per-line-base64": lambda: mime_message([
        b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64"
        b"\r\n\r\n" + per_line_base64(pdf(pad=5000))]),
    "zip-data-descriptor": lambda: mime_message([attachment(_streamed_zip(), "a.zip")]),
    "text-with-begin-prose": lambda: mime_message([text_part(
        "Ke hoach:\r\nbegin 2024 ke hoach nam\r\nCac buoc tiep theo.\r\n")]),
    "html-qp": lambda: mime_message([
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\n<p>K=C3=ADnh g=E1=BB=ADi</p>=\r\n<p>--</p>"]),
}


def _streamed_zip() -> bytes:
    """A zip written by a streaming writer (sizes in a data descriptor)."""
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            return buf.write(b)

    with zipfile.ZipFile(Unseekable(), "w", zipfile.ZIP_DEFLATED) as z:  # type: ignore[arg-type]
        with z.open("bao-cao.txt", "w") as f:
            f.write(b"noi dung\n" * 1000)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_clean_message_passes(name: str) -> None:
    raw = CORPUS[name]()
    assert message_executables(raw) == []  # the corpus really is clean
    model = inspect_bytes(raw)
    assert model.findings == [], model.findings
    assert [v for v in attachment_rules.decide(model, RULES) if v.smtp_code >= 400] == []


@pytest.mark.skipif(TOOLS["7z"] is None, reason="7z not installed")
def test_clean_7z_of_documents(tmp_path: Path) -> None:
    data = sevenzip(tmp_path, {"bao-cao.pdf": pdf(), "so-lieu.xlsx": xlsx_full()})
    model = inspect_bytes(mime_message([attachment(data, "ho-so.7z")]))
    assert model.findings == []


def test_clean_zip_by_hand_with_unicode_path() -> None:
    # Info-ZIP writes a Unicode Path field beside a CP437 name: both harmless.
    from tests.unit.inspect_corpus import unicode_path_extra

    extra = unicode_path_extra(b"Bao cao.pdf", "Báo cáo.pdf")
    lo, ce = zip_entry(b"Bao cao.pdf", pdf(), extra=extra)
    model = inspect_bytes(mime_message([attachment(zip_from([(lo, ce)]), "a.zip")]))
    assert model.findings == []


@pytest.mark.skipif(not os.environ.get("MAILWARDEN_CLEAN_DIR"),
                    reason="MAILWARDEN_CLEAN_DIR: a directory of real .eml files")
def test_real_clean_mail() -> None:  # pragma: no cover - operator corpus
    for path in sorted(Path(os.environ["MAILWARDEN_CLEAN_DIR"]).glob("*.eml")):
        model = inspect_bytes(path.read_bytes())
        assert model.findings == [], (path, model.findings)
