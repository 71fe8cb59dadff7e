"""Sphinx configuration for the ensemblenet documentation.

Built offline with Sphinx built-ins only (CI runs the html and doctest builders with ``-W``).
The package is imported from ``../src``, so the docs build without installing it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# Read the version without importing the package (importing it pulls in torch).
_VERSION_FILE = ROOT / "src" / "ensemblenet" / "_version.py"
_match = re.search(r'__version__\s*=\s*"([^"]+)"', _VERSION_FILE.read_text(encoding="utf-8"))

project = "ensemblenet"
author = "ensemblenet developers"
copyright = "ensemblenet developers"
release = _match.group(1) if _match else "unknown"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
nitpicky = False

# --- autodoc / napoleon ----------------------------------------------------------------------
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become field lists, not attribute entries: autodoc documents dataclass
# fields itself, and two entries for one attribute would be a duplicate-object warning.
napoleon_use_ivar = True

# --- doctest ---------------------------------------------------------------------------------
# Only the explicit ``.. doctest::`` / ``.. testcode::`` blocks of these pages run here. The
# ``>>>`` examples inside the module docstrings (pulled into the API page by autodoc) rely on
# their module's globals and are run by pytest instead.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import torch
torch.manual_seed(0)
"""

# --- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "Ensemble transfer learning on images",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
