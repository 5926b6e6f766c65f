"""Sphinx configuration: the docs are Markdown pages (MyST), built with ``tox -e docs``; the API page is
generated from the package's docstrings (autodoc), so the package must be importable (``pip install -e .``)."""

project = "pytest-aero-virtio"
author = "pytest-aero-virtio developers"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"

# Links such as protocol.md#provisioning: GitHub-style anchors for headings down to ###.
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
