"""Message authentication: DNS, SPF, DKIM signing and verification, DMARC.

Import the modules you need (`mailwarden.auth.engine` is the milter's entry);
this package file stays empty so that the pure `rules/authentication.py` can
import `mailwarden.auth.results` without pulling in DNS or crypto code.
"""
