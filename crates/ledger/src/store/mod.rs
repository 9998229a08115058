//! The SQLite store of one replica (`chain.db`).
