"""Postfix policy delegation daemon (SMTPD_POLICY_README)."""
