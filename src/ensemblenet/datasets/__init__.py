"""Public image sets, fetched only with consent: a real default for people without their own data.

:func:`dataset_folder` returns a folder laid out one sub-folder per class, ready for
:func:`~ensemblenet.scan_folder` or :func:`~ensemblenet.finetune`. It never touches the network
unless ``download=True``: without it, a missing data set is an error that says exactly what to
download, from where, and where to put it (so a machine without network can be given the file).
A download shows a progress bar and is checked against the publisher's checksum before anything
is unpacked; archives are unpacked without following links or leaving their folder.

>>> from ensemblenet.datasets import dataset_folder
>>> folder = dataset_folder("oxford-pets-binary", download=True)  # doctest: +SKIP
>>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
['cats', 'dogs']

The built-in set is ``"oxford-pets-binary"``: the Oxford-IIIT Pet photos as cats vs dogs (what
torchvision calls ``OxfordIIITPet(target_types="binary-category")``), about 755 MB. Others are
added with :func:`register_dataset`. The cache folder is ``$ENSEMBLENET_DATA`` or
``~/.cache/ensemblenet/datasets`` (:func:`default_root`).

:func:`synthetic_folder` writes coloured-noise stand-ins, for exercising code only (the example
scripts use it with an explicit ``--synthetic``, never silently).

This layer sits beside :mod:`ensemblenet.data` and imports nothing from it: it only puts files
in folders.
"""

from ._fetch import (
    DATASETS,
    DatasetSource,
    dataset_folder,
    default_root,
    oxford_pets_binary,
    register_dataset,
    synthetic_folder,
)

__all__ = [
    "DATASETS",
    "DatasetSource",
    "dataset_folder",
    "default_root",
    "oxford_pets_binary",
    "register_dataset",
    "synthetic_folder",
]
