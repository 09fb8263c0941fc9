import pytest

from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS, FER2013_CSV_CLASSES, canonical_label, parse_mapping


def test_canonical_class_order_is_pinned():
    # Every shipped model depends on this order; changing it is a breaking change.
    assert EXPRESSIONS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert sorted(FER2013_CSV_CLASSES) == sorted(EXPRESSIONS)
    assert FER2013_CSV_CLASSES[4] == "sad" and FER2013_CSV_CLASSES[6] == "neutral"


@pytest.mark.parametrize(
    "name, expected",
    [("Happy", "happy"), ("happiness", "happy"), ("ANGER", "angry"), ("sadness", "sad"), ("Surprised", "surprise"),
     ("fearful", "fear"), ("contempt", None), ("train", None),
     # RAVDESS has calm beside neutral and AffectNet's None means none of its eight: folded into
     # neutral they gave silently wrong labels; they stop the read like contempt (--map calm=neutral)
     ("calm", None), ("None", None)],
)
def test_aliases(name, expected):
    assert canonical_label(name) == expected


def test_mapping_folds_unknown_classes_only_when_asked():
    assert canonical_label("contempt") is None
    assert canonical_label("contempt", {"contempt": "disgust"}) == "disgust"
    with pytest.raises(FervidError, match="not one of"):
        canonical_label("contempt", {"contempt": "boredom"})
    assert parse_mapping(["contempt=disgust"]) == {"contempt": "disgust"}
    with pytest.raises(FervidError, match="FOLDER=CLASS"):
        parse_mapping(["contempt"])
    assert parse_mapping(["contempt=Disgusted"]) == {"contempt": "Disgusted"}  # an alias of a class is one
    with pytest.raises(FervidError, match="'boredom' is not one of"):
        parse_mapping(["contempt=boredom"])  # refused even when no folder is named contempt
