"""Usage: extraction per protocol, the SQLite ledger and its schema."""
