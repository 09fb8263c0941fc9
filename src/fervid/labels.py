"""The seven expression classes in their one canonical order, and the names datasets use for them.

Every model, dataset reader and output uses this order; changing it breaks every shipped model.
"""

from __future__ import annotations

from collections.abc import Mapping

from fervid.errors import FervidError

EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# Probability columns of every table fervid writes (analyze's Parquet, live's CSV timeline), so code reads either.
PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"prob_{name}" for name in EXPRESSIONS)

ALIASES: dict[str, str] = {
    "anger": "angry",
    "mad": "angry",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "sadness": "sad",
    "unhappy": "sad",
    "surprised": "surprise",
    "suprise": "surprise",
}

# Split folder names (normalized) and the split each means; here, not in the dataset readers, so
# that the inference path (bench's faces) reads splits as training does without pandas.
SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",  # the machine-learning name for it ("dev set"), never a class
    "publictest": "validation",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}

def folder_split(name: str) -> str | None:
    """The split a folder's name means, or None. Separators and a trailing "set" or "images" are
    ignored: train_set/ and test_set/ (a common layout), then train_images/ and test_images/, were
    not splits, so every face of both, the test faces too, was read as training data without a
    word. Not "data": testdata/ and test_data/ are as often folders that wrap a whole dataset."""
    key = normalize_name(name).replace("_", "")
    for suffix in ("set", "images"):
        if key.endswith(suffix) and key[: -len(suffix)] in SPLIT_NAMES:
            key = key[: -len(suffix)]
    return SPLIT_NAMES.get(key)


def split_folder(parts: tuple[str, ...]) -> tuple[int, str] | None:
    """The nearest folder of a file's path ``parts`` (the file last) with a split name, as
    (position in ``parts``, split), or None: how the dataset readers and bench find a face's split."""
    for position in range(len(parts) - 2, -1, -1):
        if (split := folder_split(parts[position])) is not None:
            return position, split
    return None


# FER2013's CSV numbers its classes in a different order from the canonical one.
FER2013_CSV_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def normalize_name(name: str) -> str:
    """Lower-case a folder or label name and drop separators, so 'Happy', ' happy ' and 'HAPPY' agree."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def canonical_label(name: str, mapping: Mapping[str, str] | None = None) -> str | None:
    """The canonical class for a dataset's name of it, or None when it is not one of the seven.

    ``mapping`` (from ``--map contempt=disgust``) is consulted first, so users can fold in classes
    such as CK+'s ``contempt`` explicitly; nothing is merged unless asked for.
    """
    key = normalize_name(name)
    if mapping:
        normalized = {normalize_name(k): v for k, v in mapping.items()}
        if key in normalized:
            target = normalize_name(normalized[key])
            target = ALIASES.get(target, target)
            if target not in EXPRESSIONS:
                raise FervidError(f"--map {name}={normalized[key]}: '{normalized[key]}' is not one of {', '.join(EXPRESSIONS)}")
            return target
    key = ALIASES.get(key, key)
    return key if key in EXPRESSIONS else None


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """Turn ``["contempt=disgust", ...]`` into a dict, rejecting malformed items with one clear line."""
    mapping: dict[str, str] = {}
    for item in items or []:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise FervidError(f"--map expects FOLDER=CLASS, got '{item}'")
        if ALIASES.get(normalize_name(target), normalize_name(target)) not in EXPRESSIONS:
            # checked here, not only when a folder matches: a typo'd class must not pass unnoticed
            raise FervidError(f"--map {item}: '{target.strip()}' is not one of {', '.join(EXPRESSIONS)}")
        mapping[source.strip()] = target.strip()
    return mapping
