"""Lock notifications: the audit stream's lock/unlock events mailed to the account's
owner and the administrators (`mailwarden notifier`, docs/operations.md)."""
