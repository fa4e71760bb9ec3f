"""Dovecot's auth policy server: a locked mailbox cannot log in (Dieu 7.1), consecutive
failed logins lock it (Dieu 7.2.a), and failing client addresses are slowed down."""
