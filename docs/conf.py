"""Sphinx configuration: the docs are Markdown pages (MyST), built with ``tox -e docs``."""

project = "pytest-aero-virtio"
author = "pytest-aero-virtio developers"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
