"""Embedded defaults: each module is an ordinary plugin, loaded by entry point."""
