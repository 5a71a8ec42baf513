"""mediaindex storage for s3:// locations (see plugin.py)."""
