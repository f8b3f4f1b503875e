"""Keeping an untrusted submission in its box: a bubblewrap sandbox, caps on what it may use, a
work folder of its own and a PostgreSQL server of its own, all gone when it is graded."""
