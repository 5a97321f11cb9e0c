"""Alembic migrations of the ledger store (applied by `spendgate migrate` and at start-up)."""
