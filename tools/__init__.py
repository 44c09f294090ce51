"""Maintenance scripts: model fetch, checkpoint conversion."""
