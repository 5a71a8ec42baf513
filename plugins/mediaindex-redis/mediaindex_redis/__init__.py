"""mediaindex-redis: one coordinator, many workers, through Dramatiq on Redis (see link.py)."""
__version__ = "0.1.0"
