"""Small SQLite schema helpers shared by the migrations of every store (no store of its own, so a
module the store opens, such as the run ledger, can use them without importing the store back)."""

from __future__ import annotations

import sqlite3


def columns_of(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def add_column(conn: sqlite3.Connection, table: str, column: str, definition: str) -> bool:
    """Add ``column`` unless the table already has it; True when it was added."""
    if column in columns_of(conn, table):
        return False
    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    return True
