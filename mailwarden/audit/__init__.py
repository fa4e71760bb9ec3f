"""`mailwarden forwarding audit`: every configured forward from a local mailbox
to a private address that can be found in the configuration (Dieu 4.5).

Forwards made by Postfix itself (virtual_alias_maps, alias_maps, .forward)
never pass a milter before rewriting, and Sieve `redirect` rules are only
seen when they fire. This lists them ahead of time, so operators can run it
from cron or from the CI of their configuration:

    mailwarden forwarding audit [--postfix-config DIR] [--forward-files GLOB]
                                [--sieve GLOB] [--json] [--strict]

Exit 0: nothing found; 1: at least one forward (or, with --strict, a source
that could not be inspected); 2: usage or Postfix configuration error.

Sources:
* Postfix `virtual_alias_maps` and `alias_maps`, read with `postconf -c DIR`;
  maps of the types `postmap -s` can list (hash, btree, lmdb, cdb, dbm, sdbm)
  are listed with it, `texthash:` files and `inline:`/`static:` values are
  read directly, `proxy:`/`unionmap:` are unwrapped. Other types (ldap,
  mysql, pgsql, sqlite, regexp, pcre, tcp, pipemap, ...) are reported as not
  inspectable.
* `.forward` files (globs from config), including `:include:` files.
* Sieve scripts with `redirect` (globs of files or directories of scripts).
The first `*` of a glob names the mailbox owner (`/home/*/.forward`).

Layout: the parsers are pure (text in, records out; no subprocess, os, pathlib,
glob or socket) and the only module that touches the system is `sources`:

    findings.py       AuditFinding, AuditError, who a file belongs to, private/local
    aliases.py        alias/.forward right-hand sides, Postfix table lines, :include:
    postfix_maps.py   map lists, inline:/static:/texthash: contents, postconf/postmap output
    forward_files.py  a .forward file -> findings
    sieve.py          RFC 5228 lexer, `redirect` commands -> findings
    sources.py        postconf/postmap subprocesses, globbing, reading files; audit()
    command.py        the subcommand's arguments and report (text or JSON), exit codes
"""
