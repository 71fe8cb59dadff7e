"""Built-in backbone sources (registered by :mod:`ensemblenet.backbones`)."""
