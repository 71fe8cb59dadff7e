"""Sphinx configuration for the ensemblenet documentation.

Built offline with Sphinx built-ins only (CI runs the html and doctest builders with ``-W``).
The package is imported from ``../src``, so the docs build without installing it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

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
# Module constants and registries (HEADS, STRATEGIES...) and a few small methods have no docstring
# of their own; they are still part of the public surface, so list them.
autodoc_default_options = {"undoc-members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become field lists, not attribute entries: autodoc documents dataclass
# fields itself, and two entries for one attribute would be a duplicate-object warning.
napoleon_use_ivar = True

# Docstrings refer to public names the way users import them (``ensemblenet.Samples``), while
# each object is documented once, under its defining module (``ensemblenet.data.Samples``).
autodoc_inherit_docstrings = False  # not torch's generic ``forward``/``extra_repr`` texts

# --- doctest ---------------------------------------------------------------------------------
# Only the explicit ``.. doctest::`` / ``.. testcode::`` blocks of these pages run here. The
# ``>>>`` examples inside the module docstrings (pulled into the API page by autodoc) rely on
# their module's globals and are run by pytest instead.
doctest_test_doctest_blocks = ""
# One thread: the examples use tiny tensors, and on a busy 2-core machine torch's thread pool
# makes them a hundred times slower than a single thread does.
doctest_global_setup = """
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
"""

# --- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "Ensemble transfer learning on images",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []


# --- links to package re-exports ---------------------------------------------------------------


def _resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``ensemblenet.Name[.attr]`` to the one documented ``ensemblenet.<package>.Name[.attr]``.

    The package re-exports names from its subpackages; the API page documents each name under its
    subpackage only, so without this the docstrings' ``:class:`~ensemblenet.Samples```
    references would render as plain text instead of links. A bare name that a docstring uses
    from another module (``:class:`TrainConfig``` in ``ensemblenet.api``) is resolved the same
    way when exactly one documented object has that name.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target:
        return None
    domain = env.get_domain("py")
    if target.startswith("ensemblenet."):
        suffix, depth = target[len("ensemblenet") :], target.count(".") + 1
    else:
        suffix, depth = "." + target, None
    matches = [
        name
        for name in domain.objects
        if name.startswith("ensemblenet.")
        and name.endswith(suffix)
        and (depth is None or name.count(".") == depth)
    ]
    if len(matches) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode)


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_reexport)
