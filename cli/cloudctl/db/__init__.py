"""SQL state: typed models, the session / unit of work, and Alembic migrations."""
