"""Look-alike domains: what a reader sees, and whether it resembles one of ours.

A domain is compared three ways (docs/authentication.md, "Look-alike domains"):

* `ascii_form`: the bytes Postfix and DNS act on, as an A-label string. Every
  non-ASCII label becomes "xn--" + its punycode (RFC 3492), whatever it holds
  (also invisible characters IDNA would refuse), so it never equals one of our
  ASCII domains by accident. This is the form our own headers write.
* `visible`: what a reader is shown: NFKC (fullwidth letters and dots fold),
  format characters removed (zero-width space/joiners, soft hyphen, bidi
  controls: Unicode category Cf, plus the fillers that render blank), the
  ideographic full stops as ".", case folded, and "xn--" labels decoded to
  Unicode (punycode both ways).
* `skeleton`: Unicode TR 39 section 4 skeletons, restricted to what a domain can
  hold: NFD, combining marks dropped (stricter than TR 39: "ninhbình" is shown
  as ninhbinh to a hurried reader), each character mapped to the ASCII prototype
  it is confusable with (the table below: Cyrillic, Greek, Armenian, Latin
  small capitals and other letters that render as a-z, digits 0/1, dashes), then
  "m" as "rn" so that both spell alike.

`resembles(domain, local, subdomains)` names the local domain a visible sender
domain is confusable with while not being it ("" otherwise).
"""

from __future__ import annotations

import unicodedata

from mailwarden.addresses import in_domains

# Rendered blank but not in category Cf.
_BLANK = {"\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u3164", "\uffa0"}
_DOTS = {"\u3002": ".", "\uff61": ".", "\u2024": ".", "\ufe52": ".", "\u00b7": "."}

# Confusable -> ASCII prototype (lower case). Written for this module from the
# letters that render as Latin a-z in common fonts (Unicode TR 39 data, the subset
# that matters for domain names). NFKC already folds fullwidth and mathematical forms.
_CONFUSABLE = {  # prototype: the characters shown like it
    "-": "\u2010\u2011\u2012\u2013\u2014\u2212\u02d7\u2043",
    "3": "\u0437\u025c",
    "a": "\u0430\u03b1\u0251\u1d00",
    "b": "\u0432\u044c\u03b2\u0185",
    "c": "\u0441\u03f2\u1d04",
    "d": "\u0501\u1d05\u0111\u0257",
    "e": "\u0435\u0451\u03b5\u1d07",
    "g": "\u0581\u0261\u0262",
    "h": "\u04bb\u043d\u0570\u029c\u0127",
    "i": "\u0456\u0457\u03b9\u03af\u03ca\u0131\u0269\u026a",
    "j": "\u0458\u03f3\u1d0a",
    "k": "\u043a\u03ba\u1d0b",
    "l": "\u04cf\u01c0\u0142\u2113\u01401|",
    "m": "\u043c\u1d0d",
    "n": "\u043f\u03b7\u0578\u0274",
    "o": "\u043e\u03bf\u03cc\u0585\u1d0f\u00f80",
    "p": "\u0440\u03c1\u1d18",
    "q": "\u051b\u0566",
    "r": "\u0433\u0280",
    "s": "\u0455\ua731",
    "t": "\u0442\u03c4\u1d1b\u0167",
    "u": "\u0446\u03c5\u03cb\u057d\u1d1c\u028b",
    "v": "\u0475\u03bd\u1d20",
    "w": "\u051d\u0561\u1d21",
    "x": "\u0445\u03c7",
    "y": "\u0443\u04af\u03b3\u028f",
    "z": "\u1d22\u01b6",
}
_PROTOTYPES = {c: proto for proto, chars in _CONFUSABLE.items() for c in chars}


def _drop_invisible(text: str) -> str:
    return "".join(c for c in text
                   if unicodedata.category(c) != "Cf" and c not in _BLANK)


def _decode_label(label: str) -> str:
    if label.startswith("xn--") and label.isascii():
        try:
            return label[4:].encode("ascii").decode("punycode")
        except UnicodeError:
            return label
    return label


def visible(domain: str) -> str:
    """The domain as a reader sees it (see the module doc)."""
    text = unicodedata.normalize("NFKC", _drop_invisible(domain))
    text = "".join(_DOTS.get(c, c) for c in text).casefold().rstrip(".")
    text = ".".join(_decode_label(x) for x in text.split("."))
    return unicodedata.normalize("NFKC", _drop_invisible(text)).casefold()


def ascii_form(domain: str) -> str:
    """The A-label form (lower case); never raises."""
    labels = []
    for label in domain.lower().rstrip(".").split("."):
        if label.isascii():
            labels.append(label)
        else:
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
    return ".".join(labels)


def skeleton(text: str) -> str:
    """A TR 39-style skeleton of a visible domain (see the module doc)."""
    decomposed = unicodedata.normalize("NFD", visible(text))
    out = []
    for c in decomposed:
        if unicodedata.category(c) == "Mn":
            continue
        out.append(_PROTOTYPES.get(c, c))
    return "".join(out).replace("m", "rn")


def resembles(domain: str, local: tuple[str, ...], subdomains: bool) -> str:
    """The local domain `domain` is confusable with, when it is not that domain
    (nor one of its subdomains) byte for byte; "" otherwise."""
    if not domain:
        return ""
    actual = ascii_form(domain)
    if in_domains(actual, local, subdomains):
        return ""  # literally ours: the spoof check applies, not this one
    seen = skeleton(domain)
    for d in local:
        s = skeleton(d)
        if seen == s or seen.endswith("." + s):
            return d
    return ""


def text_mentions(text: str, local: tuple[str, ...]) -> str:
    """The local domain a free text (a display name, a comment) shows, literally or as a
    look-alike; "" when none."""
    if not text:
        return ""
    seen = visible(text)
    sk = "".join(skeleton(text).split())  # "ninhbinh . gov . vn" reads as the domain
    for d in local:
        if d in seen or skeleton(d) in sk:
            return d
    return ""
