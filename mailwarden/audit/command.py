"""`mailwarden forwarding audit`: its arguments, its report (text or JSON), its exit code."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from mailwarden.audit.findings import FORWARD, NOT_INSPECTABLE, AuditError, AuditFinding
from mailwarden.audit.sources import audit, has_main_cf
from mailwarden.rules.forwarding import ForwardSettings
from mailwarden.settings import AuditSettings

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postfix-config", metavar="DIR",
                        help="Postfix config directory read with postconf -c "
                        "(default: forwarding.postfix_config_dir)")
    parser.add_argument("--no-postfix", action="store_true", help="skip the Postfix maps")
    parser.add_argument("--forward-files", action="append", metavar="GLOB",
                        help=".forward files (repeat; default: forwarding.forward_files)")
    parser.add_argument("--sieve", action="append", metavar="GLOB",
                        help="Sieve scripts or directories of them (repeat; default: "
                        "forwarding.sieve_scripts)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--strict", action="store_true",
                        help="a source that could not be inspected also exits 1")


def report(findings: list[AuditFinding], citation: str, *, as_json: bool) -> str:
    """The command's standard output for these findings (without the final newline)."""
    forwards = [f for f in findings if f.kind == FORWARD]
    blind = [f for f in findings if f.kind == NOT_INSPECTABLE]
    if as_json:
        return json.dumps({"citation": citation, "forwards": [asdict(f) for f in forwards],
                           "not_inspectable": [asdict(f) for f in blind]}, indent=2)
    cite = f" ({citation})" if citation else ""
    return "\n".join([*(f.line() for f in forwards + blind),
                      f"{len(forwards)} automatic forward(s) from a local mailbox to a "
                      f"private address{cite}; {len(blind)} source(s) not inspectable"])


def main(args: argparse.Namespace, s: ForwardSettings, where: AuditSettings) -> int:
    """Exit 0 nothing found, 1 forwards found (or uninspectable with --strict), 2 usage."""
    if not s.local_domains:
        print("mailwarden: forwarding audit: no local domains configured", file=sys.stderr)
        return EXIT_USAGE
    postconf_dir = None if args.no_postfix else (
        args.postfix_config or where.postfix_config_dir)
    forward_globs = args.forward_files if args.forward_files is not None else \
        list(where.forward_files)
    sieve_globs = args.sieve if args.sieve is not None else \
        list(where.sieve_scripts)
    if postconf_dir and not has_main_cf(postconf_dir):
        print(f"mailwarden: forwarding audit: {postconf_dir}/main.cf: no such file "
              "(use --postfix-config DIR or --no-postfix)", file=sys.stderr)
        return EXIT_USAGE
    try:
        findings = audit(s, postconf_dir=postconf_dir or None, forward_globs=forward_globs,
                         sieve_globs=sieve_globs)
    except AuditError as e:
        print(f"mailwarden: forwarding audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(report(findings, s.citation, as_json=args.json))
    forwards = any(f.kind == FORWARD for f in findings)
    blind = any(f.kind == NOT_INSPECTABLE for f in findings)
    if forwards or (args.strict and blind):
        return EXIT_FOUND
    return EXIT_OK
