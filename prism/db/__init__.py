"""The database plumbing under the tables: engine and transactions (with the RLS setting), the
embedded PostgreSQL, LISTEN/NOTIFY, what a failure means, and the migrations."""
