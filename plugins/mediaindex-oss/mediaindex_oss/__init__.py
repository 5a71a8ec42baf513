"""mediaindex storage for oss:// locations (see plugin.py)."""
