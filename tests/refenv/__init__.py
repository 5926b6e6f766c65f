"""Tests of the reference environment (pytest_aero_virtio.refenv)."""
