"""The SQLite results store: schema (ORM), engine/migrations, and queries."""
