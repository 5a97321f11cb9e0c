"""Test support: real PostgreSQL databases and throwaway redis-server processes."""
