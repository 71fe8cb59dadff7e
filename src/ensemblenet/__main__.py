"""``python -m ensemblenet``: the same as the ``ensemblenet`` console script."""

from .cli import main

raise SystemExit(main())
