"""Bundled demo images (see LICENSE.md)."""
