"""Images on disk to batches of tensors: the bottom of the data flow.

Two folder layouts are understood::

    folders:  root/cats/cat.1.jpg, root/dogs/dog.7.png ...   (one sub-folder per class)
    kaggle:   root/cat.1.jpg, root/dog.7.jpg ...             (flat, class = text before the first dot)

>>> samples = scan_folder("../shared/data/dogs-vs-cats-200px")  # doctest: +SKIP
>>> train, val, test = split_samples(samples, seed=0)  # doctest: +SKIP
>>> loader = make_loader(train, [spec_a, spec_b], batch_size=32, shuffle=True)  # doctest: +SKIP

The steps, each in its own module: scanning a folder into :class:`Samples` (paths and labels);
deterministic stratified splits; safe decoding (:func:`load_image`, one bad file never ends a
run); a :class:`View` per backbone (the one resize table); :class:`ImageDataset` and
:func:`make_loader` (one ``uint8`` tensor per distinct view, unreadable files skipped and
counted); the on-disk :class:`DecodedCache` of decoded pixels; training-time augmentation presets
(:func:`resolve_augment`); a run's split saved with the hash of every file
(:func:`save_split`, :func:`check_disjoint`), so held-out images stay held out; and
:func:`prefetch`, which decodes the next batches on a second thread while the network runs.
"""

from ._augment import AUGMENTATIONS, Augmentation, AugmentLike, resolve_augment
from ._dataset import ImageDataset, Item, Skipped, ViewLike
from ._decode import FORMATS, UnreadableImageError, check_image, load_image
from ._decoded_cache import CACHE_VERSION, DecodedCache, file_stamp
from ._loader import Batch, collate, make_loader
from ._prefetch import prefetch
from ._samples import DEFAULT_SPLIT, Samples, describe_skipped, split_samples
from ._scan import IMAGE_EXTENSIONS, LAYOUTS, list_image_files, scan_folder
from ._split_file import (
    SPLIT_FILE,
    SPLIT_FORMAT,
    SavedSplit,
    check_disjoint,
    file_hashes,
    file_sha256,
    find_split_file,
    load_split,
    save_split,
)
from ._views import View

__all__ = [
    "AUGMENTATIONS",
    "CACHE_VERSION",
    "DEFAULT_SPLIT",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "SPLIT_FILE",
    "SPLIT_FORMAT",
    "AugmentLike",
    "Augmentation",
    "Batch",
    "DecodedCache",
    "ImageDataset",
    "Item",
    "Samples",
    "SavedSplit",
    "Skipped",
    "UnreadableImageError",
    "View",
    "ViewLike",
    "check_disjoint",
    "check_image",
    "collate",
    "describe_skipped",
    "file_hashes",
    "file_sha256",
    "file_stamp",
    "find_split_file",
    "list_image_files",
    "load_image",
    "load_split",
    "make_loader",
    "prefetch",
    "resolve_augment",
    "save_split",
    "scan_folder",
    "split_samples",
]
