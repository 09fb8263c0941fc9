"""Dataset readers: every layout and format, conversions, caching, and the bad inputs users hit."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PEAK_MIB_SOURCE, exif_oriented_jpeg, pattern_face, write_fer_csv, write_folder_dataset, zip_folder
from fervid.data import load_arrays, read_dataset
from fervid.data.arrays import _load_cached, cache_dir, cache_path, fingerprint
from fervid.data.decode import UnreadableImage, decode_image_bytes
from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS


def test_kaggle_images_train_validation_layout(tmp_path):
    write_folder_dataset(tmp_path / "images", 0, {"train": 3, "validation": 2})
    index = read_dataset(tmp_path)
    assert index.kind == "folder"
    assert index.splits == ["train", "validation"]
    counts = index.counts()
    assert counts["train"].tolist() == [3] * 7 and counts["validation"].tolist() == [2] * 7
    arrays = load_arrays(index, "validation")
    assert arrays.images.shape == (14, 48, 48) and arrays.images.dtype == np.uint8
    assert sorted(set(arrays.labels.tolist())) == list(range(7))
    inputs = arrays.inputs()
    assert inputs.shape == (14, 48, 48, 1) and inputs.dtype == np.float32
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0
    one_hot = arrays.one_hot()
    assert one_hot.shape == (14, 7) and (one_hot.argmax(1) == arrays.labels).all()


def test_train_test_layout_and_aliases(tmp_path):
    for split, folder in [("train", "Happiness"), ("test", "SADNESS"), ("val", "surprised")]:
        (tmp_path / split / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / split / folder / "a.jpg"), pattern_face(0, np.random.default_rng(0)))
    frame = read_dataset(tmp_path).frame
    assert set(zip(frame["split"], frame["label"])) == {("train", "happy"), ("test", "sad"), ("validation", "surprise")}


def test_class_folders_without_splits_are_train(tmp_path):
    write_folder_dataset(tmp_path, 0, {"": 2})
    index = read_dataset(tmp_path)
    assert index.splits == ["train"] and len(index.frame) == 14


def test_zip_is_read_in_place_and_matches_folder(tmp_path):
    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 2, "test": 1})
    archive = zip_folder(folder, tmp_path / "d.zip", prefix="fer2013/")
    from_zip, from_folder = read_dataset(archive), read_dataset(folder)
    assert from_zip.kind == "zip"
    assert from_zip.counts().equals(from_folder.counts())
    zipped, plain = load_arrays(from_zip, "train"), load_arrays(from_folder, "train")
    assert np.array_equal(zipped.images, plain.images) and np.array_equal(zipped.labels, plain.labels)
    assert not (tmp_path / "fer2013").exists()


def test_fer2013_csv_maps_its_own_class_order(tmp_path):
    path = write_fer_csv(tmp_path / "fer.csv", {"Training": 2, "PublicTest": 1, "PrivateTest": 1})
    index = read_dataset(path)
    assert index.kind == "csv" and index.splits == ["train", "validation", "test"]
    assert index.counts()["train"].tolist() == [2] * 7
    assert len(load_arrays(index, "train")) == 14
    # FER2013 numbers sad 4 and neutral 6; canonically neutral is 4 and sad 5.
    rows = "\n".join(f"{number},{' '.join([str(number * 30)] * 2304)},Training" for number in range(7))
    path.write_text("emotion,pixels,Usage\n" + rows + "\n")
    arrays = load_arrays(read_dataset(path), "train")
    value_of = {EXPRESSIONS[label]: int(image[0, 0]) for label, image in zip(arrays.labels, arrays.images)}
    assert value_of == {"angry": 0, "disgust": 30, "fear": 60, "happy": 90, "sad": 120, "surprise": 150, "neutral": 180}


def test_csv_pixels_round_trip(tmp_path):
    face = np.arange(48 * 48, dtype=np.int64).reshape(48, 48) % 256
    path = tmp_path / "one.csv"
    path.write_text("emotion,pixels,Usage\n" + f"3,{' '.join(map(str, face.ravel()))},Training\n")
    arrays = load_arrays(read_dataset(path), "train")
    assert arrays.labels.tolist() == [EXPRESSIONS.index("happy")]
    assert np.array_equal(arrays.images[0], face.astype(np.uint8))


def test_csv_with_wrong_columns_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label,image\n1,2\n")
    with pytest.raises(FervidError, match="emotion,pixels"):
        read_dataset(path)


def test_csv_row_with_extra_fields_is_one_unreadable_face_not_a_parser_error(tmp_path):
    good = " ".join(["100"] * 2304)
    path = tmp_path / "fer.csv"
    path.write_text(f"emotion,pixels,Usage\n0,{good},Training\n3,{good},Training\n1,2 3,4,5,Training\n")
    arrays = load_arrays(read_dataset(path), "train")
    assert len(arrays) == 2 and len(arrays.failed) == 1


def test_csv_wrong_pixel_count_is_skipped_and_listed(tmp_path):
    good = " ".join(["100"] * 2304)
    path = tmp_path / "fer.csv"
    path.write_text(f"emotion,pixels,Usage\n0,{good},Training\n1,1 2 3,Training\n2,1 2 3 4,Training\n9,{good},Training\n")
    index = read_dataset(path)
    assert index.dropped == {"rows without an emotion 0-6 (out of range, empty or not a number)": 1}
    arrays = load_arrays(index, "train")
    assert len(arrays) == 1
    reasons = sorted(reason for _, reason in arrays.failed)
    assert len(reasons) == 2 and "not a square image" in reasons[0]
    assert "smaller than a 48x48 face" in reasons[1], "a 2x2 row is a cut-short one, not a face"


def test_a_jpeg_is_turned_upright_by_its_exif_orientation():
    """A phone stores a portrait shot sideways with an orientation tag; training must see it upright."""
    upright = np.zeros((48, 48), np.uint8)
    upright[:16] = 255  # bright top third
    sideways = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)
    stored = decode_image_bytes(cv2.imencode(".jpg", sideways)[1].tobytes())
    assert stored[:, :16].mean() > 200 and stored[:16, 16:].mean() < 50  # without the tag: bright left third
    face = decode_image_bytes(exif_oriented_jpeg(sideways, 6))
    assert face[:16].mean() > 200 and face[16:].mean() < 50


def test_color_depth_and_alpha_become_gray(tmp_path):
    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[..., 2] = 255  # pure red in BGR order
    rgba = np.dstack([rgb, np.full((96, 96), 255, np.uint8)])
    deep = np.full((60, 60), 65535, np.uint16)
    red_gray = decode_image_bytes(cv2.imencode(".png", rgb)[1].tobytes())
    assert red_gray.shape == (48, 48) and abs(int(red_gray.mean()) - 76) <= 1  # 0.299 * 255
    assert np.array_equal(decode_image_bytes(cv2.imencode(".png", rgba)[1].tobytes()), red_gray)
    rgba[:, 48:, 3] = 0  # right half transparent: white, as a viewer shows it, not the red under it
    cut_out = decode_image_bytes(cv2.imencode(".png", rgba)[1].tobytes())
    assert abs(int(cut_out[:, :23].mean()) - 76) <= 1 and cut_out[:, 25:].min() == 255
    assert decode_image_bytes(cv2.imencode(".png", deep)[1].tobytes()).min() == 255
    palette = tmp_path / "palette.gif"
    from PIL import Image

    Image.fromarray(np.full((48, 48), 200, np.uint8)).convert("P").save(palette)
    Image.fromarray(np.full((48, 48), 200, np.uint8)).convert("P").save(tmp_path / "palette.png")
    assert abs(int(decode_image_bytes((tmp_path / "palette.png").read_bytes()).mean()) - 200) <= 1
    ok, float_tiff = cv2.imencode(".tiff", np.full((48, 48), 300.0, np.float32))  # neither 0..1 nor 0..255
    assert ok
    with pytest.raises(UnreadableImage, match="float32 image with values 300"):  # skipped and listed, not a crash
        decode_image_bytes(float_tiff.tobytes())


def test_corrupt_and_non_image_files_are_skipped_and_counted(tmp_path):
    write_folder_dataset(tmp_path, 0, {"train": 2})
    (tmp_path / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    (tmp_path / "train" / "sad" / "empty.png").write_bytes(b"")
    (tmp_path / "train" / "sad" / "notes.txt").write_text("ignored: not an image suffix")
    arrays = load_arrays(read_dataset(tmp_path), "train")
    assert len(arrays) == 14
    assert sorted(Path(s).name for s, _ in arrays.failed) == ["broken.jpg", "empty.png"]


def test_unknown_class_folders_are_reported_dropped_or_mapped(tmp_path):
    write_folder_dataset(tmp_path, 0, {"train": 1})
    (tmp_path / "train" / "contempt").mkdir()
    cv2.imwrite(str(tmp_path / "train" / "contempt" / "c.png"), pattern_face(0, np.random.default_rng(1)))
    with pytest.raises(FervidError, match="contempt"):
        read_dataset(tmp_path)
    dropped = read_dataset(tmp_path, unknown="drop")
    assert dropped.dropped == {"contempt": 1} and len(dropped.frame) == 7
    mapped = read_dataset(tmp_path, mapping={"contempt": "disgust"})
    assert mapped.counts().loc["disgust", "train"] == 2


def test_kaggles_nested_second_copy_is_read_once(tmp_path, capsys):
    """The face-expression download holds images/train|validation and images/images/train|validation."""
    kaggle = write_folder_dataset(tmp_path / "k" / "images", 0, {"train": 2, "validation": 1})
    shutil.copytree(kaggle, kaggle / "images")
    archive = zip_folder(tmp_path / "k", tmp_path / "kaggle.zip")
    index = read_dataset(archive)
    assert index.counts()["train"].tolist() == [2] * 7 and index.counts()["validation"].tolist() == [1] * 7
    assert not index.frame["source"].str.startswith("images/images/").any()
    assert "images/images/ repeats images/ file for file (21 images); read once" in capsys.readouterr().err
    write_folder_dataset(tmp_path / "two" / "2019", 0, {"train": 1})
    write_folder_dataset(tmp_path / "two" / "2020", 0, {"train": 2})
    assert read_dataset(tmp_path / "two").counts()["train"].tolist() == [3] * 7, "two collections are both read"
    assert capsys.readouterr().err == ""
    # same names, same sizes (an uncompressed format's files all have one), other faces: not a copy
    write_folder_dataset(tmp_path / "bmp" / "2019", 0, {"train": 1}, seed=1, ext=".bmp")
    write_folder_dataset(tmp_path / "bmp" / "2020", 0, {"train": 1}, seed=2, ext=".bmp")
    assert read_dataset(tmp_path / "bmp").counts()["train"].tolist() == [2] * 7, "a folder copy is judged by content"
    assert capsys.readouterr().err == ""
    shutil.copytree(tmp_path / "bmp" / "2019", tmp_path / "bmp" / "copy")  # a real copy still is one
    assert read_dataset(tmp_path / "bmp").counts()["train"].tolist() == [2] * 7
    assert "bmp: copy/ repeats 2019/ file for file (7 images); read once" in capsys.readouterr().err


def test_a_map_whose_folder_is_not_there_is_named(tmp_path, capsys):
    """A misspelt --map (contemp=disgust) maps nothing; saying so is the only way a user learns it."""
    write_folder_dataset(tmp_path, 0, {"train": 1})
    (tmp_path / "train" / "Contempt").mkdir()
    cv2.imwrite(str(tmp_path / "train" / "Contempt" / "c.png"), pattern_face(0, np.random.default_rng(1)))
    read_dataset(tmp_path, mapping={"contempt": "disgust"})
    assert capsys.readouterr().err == "", "folder names match whatever their case"
    read_dataset(tmp_path, mapping={"contemp": "disgust", "contempt": "disgust"}, unknown="drop")
    assert capsys.readouterr().err.split() == f"warning: --map contemp=disgust: {tmp_path} has no 'contemp' class folder, so it maps nothing".split()
    read_dataset(write_fer_csv(tmp_path / "fer.csv", {"Training": 1}), mapping={"contempt": "disgust"})
    assert "--map contempt=disgust:" in capsys.readouterr().err, "a CSV's classes are numbers: a map does nothing"


def test_a_wrong_root_names_its_biggest_unknown_folders_and_counts_the_rest(tmp_path):
    image = pattern_face(0, np.random.default_rng(1))
    for index in range(12):
        (tmp_path / f"album{index:02d}").mkdir()
        for copy in range(1 + (index == 11) * 4):
            cv2.imwrite(str(tmp_path / f"album{index:02d}" / f"{copy}.png"), image)
    with pytest.raises(FervidError) as error:
        read_dataset(tmp_path)
    message = str(error.value)
    assert "folders that are not expression classes: album11 (5), album00 (1), " in message
    assert "album06 (1) and 4 more;" in message and "album07" not in message


@pytest.mark.parametrize(("make", "message"), [
    ("missing", "input: no such file or folder"),
    ("empty", "input: no images in class folders (expected <class>/*.jpg"),
    ("no_classes", "input: no images in class folders (expected <class>/*.jpg"),
    ("bad_zip", "input.zip: not a readable zip file"),
    ("other_file", "input.txt: expected a folder, a .zip or a FER2013-style .csv"),
])
def test_unusable_inputs_raise_one_line_errors(tmp_path, make, message):
    path = tmp_path / "input"
    if make == "empty":
        path.mkdir()
    elif make == "no_classes":
        (path / "photos").mkdir(parents=True)
        cv2.imwrite(str(path / "photos" / "a.png"), np.zeros((8, 8), np.uint8))
        (path / "photos" / "x").mkdir()
        cv2.imwrite(str(path / "photos" / "x" / "b.png"), np.zeros((8, 8), np.uint8))
    elif make == "bad_zip":
        path = tmp_path / "input.zip"
        path.write_bytes(b"PK but not a zip")
    elif make == "other_file":
        path = tmp_path / "input.txt"
        path.write_text("hello")
    with pytest.raises(FervidError) as error:
        read_dataset(path, unknown="drop" if make == "no_classes" else "error")
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{tmp_path / message.split(':')[0]}:")
    assert message in str(error.value)


def test_an_unknown_policy_that_is_neither_error_nor_drop_is_refused(tmp_path):
    write_folder_dataset(tmp_path, 0, {"train": 1})
    with pytest.raises(FervidError, match="--unknown must be 'error' or 'drop'"):
        read_dataset(tmp_path, unknown="skip")


def test_decoded_arrays_are_cached_by_content(tmp_path):
    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    archive = zip_folder(folder, tmp_path / "d.zip")
    index = read_dataset(archive)
    first = load_arrays(index, "train")
    original = fingerprint(index)
    assert list(cache_dir().glob("*.npz")) == [cache_path(index)] and cache_path(index).stem.startswith(original)
    with pytest.MonkeyPatch.context() as patch:  # the second read is the cache's: nothing is decoded
        patch.setattr("fervid.data.arrays._decode_all", lambda index: pytest.fail("decoded again, not read from the cache"))
        again = load_arrays(read_dataset(archive), "train")
    assert np.array_equal(first.images, again.images)
    # New content (one image redrawn) means a new fingerprint, never stale arrays.
    cv2.imwrite(str(folder / "train" / "angry" / "0000.png"), np.zeros((48, 48), np.uint8))
    changed = read_dataset(zip_folder(folder, tmp_path / "d.zip"))
    assert fingerprint(changed) != original
    assert load_arrays(changed, "train").images[0].max() == 0


def test_a_new_decoder_reads_afresh_but_keeps_the_datasets_fingerprint(tmp_path, monkeypatch):
    """Faces cached by an older decoder are not served (format 4: transparent parts white), but the
    fingerprint that a run's state and a model card hold stays: a run still resumes, and evaluate
    still knows a model's own data."""
    import fervid.data.arrays as arrays_module

    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    index = read_dataset(folder)
    before, cached = fingerprint(index), cache_path(index)
    load_arrays(index)
    monkeypatch.setattr(arrays_module, "CACHE_FORMAT", arrays_module.CACHE_FORMAT + 1)
    assert fingerprint(index) == before and cache_path(index) != cached
    decodes = []
    real_decode = arrays_module._decode_all
    monkeypatch.setattr(arrays_module, "_decode_all", lambda index: decodes.append(1) or real_decode(index))
    load_arrays(index)
    assert decodes == [1]


def test_failures_of_this_machine_not_of_the_bytes_are_not_cached(tmp_path, monkeypatch):
    """A file not readable now (a chmod later fixes it, its size and time unchanged) or an image over
    this run's pixel limit was cached as unreadable: the cache, keyed by content, kept the face out
    once the file was readable or the limit unset."""
    from pathlib import Path

    import fervid.data.arrays as arrays_module
    from fervid.images import TooManyPixels

    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    locked = folder / "train" / "angry" / "0000.png"
    real_read = Path.read_bytes

    def read_bytes(path):
        if path == locked:
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_bytes", read_bytes)
        arrays = load_arrays(read_dataset(folder), "train")
    assert len(arrays) == 13 and arrays.failed == [("train/angry/0000.png", "could not be read (Permission denied)")]
    assert not cache_path(read_dataset(folder)).exists(), "a failure of this machine was cached"
    assert len(load_arrays(read_dataset(folder), "train")) == 14, "readable now: read"

    cache_path(read_dataset(folder)).unlink()
    real_decode = arrays_module.decode_image_bytes
    calls = []

    def over_the_limit(data):
        calls.append(1)
        if len(calls) == 1:
            raise TooManyPixels("an image over 100 pixels, the limit set by OPENCV_IO_MAX_IMAGE_PIXELS")
        return real_decode(data)

    monkeypatch.setattr(arrays_module, "decode_image_bytes", over_the_limit)
    assert len(load_arrays(read_dataset(folder), "train")) == 13
    assert not cache_path(read_dataset(folder)).exists(), "a pixel-limit refusal was cached"
    monkeypatch.setattr(arrays_module, "decode_image_bytes", real_decode)
    assert len(load_arrays(read_dataset(folder), "train")) == 14


def test_a_folder_dataset_is_decoded_afresh_when_a_file_changes_in_place(tmp_path):
    """Folders are fingerprinted by size and modification time: an image redrawn at the same size
    (same name, same byte count) must still not be served from the stale cache."""
    import os

    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    first = load_arrays(read_dataset(folder), "train")
    with pytest.MonkeyPatch.context() as patch:  # unchanged, the folder is read from the cache
        patch.setattr("fervid.data.arrays._decode_all", lambda index: pytest.fail("decoded again, not read from the cache"))
        load_arrays(read_dataset(folder), "train")
    image = folder / "train" / "angry" / "0000.png"
    stat = image.stat()
    size = stat.st_size
    assert first.images[0].max() > 0
    black = cv2.imencode(".png", np.zeros((48, 48), np.uint8))[1].tobytes()
    assert len(black) < size  # a black face compresses smaller than a patterned one
    image.write_bytes(black.ljust(size, b"\0"))  # bytes after a PNG's end are ignored by decoders
    assert image.stat().st_size == size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = load_arrays(read_dataset(folder), "train")
    assert again.images[0].max() == 0
    assert np.array_equal(again.images[1:], first.images[1:])


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    index = read_dataset(folder)
    expected = load_arrays(index).images
    (cache_path(index)).write_bytes(b"garbage")
    assert np.array_equal(load_arrays(index).images, expected)
    assert _load_cached(cache_path(index), len(index.frame)) is not None, "rebuilt whole"


def test_csv_usage_takes_folder_split_names_and_refuses_unknown_ones(tmp_path):
    path = write_fer_csv(tmp_path / "fer.csv", {"Training": 1, "Validation": 1, "test": 1})
    assert read_dataset(path).splits == ["train", "validation", "test"]
    write_fer_csv(path, {"train_set": 1, "Public_Test": 1, "Test Set": 1})  # as split folders so named are read
    assert read_dataset(path).splits == ["train", "validation", "test"]
    assert len(load_arrays(read_dataset(path), "public_test")) == 7, "--split takes those spellings too"
    write_fer_csv(path, {"Training": 1, "Dev2": 1})
    with pytest.raises(FervidError, match=r"Usage 'Dev2' is not a split: use Training, PublicTest, PrivateTest \(or train"):
        read_dataset(path)


def test_csv_row_with_a_stray_extra_field_is_unreadable_not_a_face(tmp_path):
    good = " ".join(["100"] * 2304)
    path = tmp_path / "fer.csv"
    path.write_text(f"emotion,pixels,Usage\n0,{good},Training\n\n3,{good},Training,extra\n5,{good}\n")
    index = read_dataset(path)
    arrays = load_arrays(index, "train")
    assert len(arrays) == 1 and sorted(arrays.failed) == [("line 4", "more fields than the header's 3"), ("line 5", "no Usage value")], "file lines, the blank one counted"
    # on the first data row, the stray field made pandas take the emotions for an index: "no row has an emotion"
    path.write_text(f"emotion,pixels,Usage\n0,{good},Training,x\n3,{good},Training\n5,{good},Training\n")
    arrays = load_arrays(read_dataset(path), "train")
    assert arrays.labels.tolist() == [EXPRESSIONS.index("happy"), EXPRESSIONS.index("surprise")]
    assert arrays.failed == [("line 2", "more fields than the header's 3")]


@pytest.mark.parametrize(("train", "other", "split"), [("train_set", "test_set", "test"), ("Train Set", "Test Set", "test"),
                                                    ("trainset", "valset", "validation"), ("train", "Public Test", "validation"),
                                                    ("train_images", "test_images", "test"), ("Train Images", "val_images", "validation")])
def test_split_folders_named_with_set_are_splits(tmp_path, train, other, split):
    """train_set/ and test_set/, then train_images/ and test_images/, were no splits: every face of
    both, the test faces too, was training data."""
    write_folder_dataset(tmp_path / "d", 0, {train: 2, other: 1})
    counts = read_dataset(tmp_path / "d").counts()
    assert {name: int(column.sum()) for name, column in counts.items()} == {"train": 14, split: 7}


def test_a_folder_wrapping_a_dataset_is_no_split(tmp_path):
    """testdata/ or test_data/ around a whole dataset stays a wrapper (a "data" suffix would make all of it test)."""
    for wrapper in ("testdata", "test_data", "Test Data"):
        write_folder_dataset(tmp_path / wrapper, 0, {wrapper: 2})  # wrapper/wrapper/<class>/: the dataset inside
        counts = read_dataset(tmp_path / wrapper).counts()
        assert {name: int(column.sum()) for name, column in counts.items()} == {"train": 14}, wrapper


def test_dev_folder_is_validation_and_a_folder_beside_splits_is_not_train(tmp_path):
    for split in ["Train", "dev", "Val"]:
        write_folder_dataset(tmp_path / "splits", 0, {split: 1})
    counts = read_dataset(tmp_path).counts()
    assert counts["train"].sum() == 7 and counts["validation"].sum() == 14
    write_folder_dataset(tmp_path / "splits", 0, {"holdout": 2})
    with pytest.raises(FervidError, match=r"beside the split folders .*: splits/holdout \(14\); rename them or drop"):
        read_dataset(tmp_path)
    dropped = read_dataset(tmp_path, unknown="drop")
    assert dropped.dropped == {"holdout": 14} and dropped.counts()["train"].sum() == 7
    (tmp_path / "splits" / "Train" / "contempt").mkdir()
    cv2.imwrite(str(tmp_path / "splits" / "Train" / "contempt" / "0.png"), pattern_face(0, np.random.default_rng(0)))
    with pytest.raises(FervidError) as error:  # both kinds in one message: one round of fixes, not two
        read_dataset(tmp_path)
    assert "splits/holdout (14); rename them" in str(error.value) and "; and folders that are not expression classes: " \
        "splits/Train/contempt (1); drop them with --unknown drop or map them" in str(error.value)


def test_images_in_a_split_folder_without_class_folders_are_dropped_and_named(tmp_path):
    image = pattern_face(0, np.random.default_rng(0))
    for folder in ["happy", "sad/test"]:
        (tmp_path / "cf2" / folder).mkdir(parents=True)
        for number in range(2):
            cv2.imwrite(str(tmp_path / "cf2" / folder / f"{number}.png"), image)
    index = read_dataset(tmp_path / "cf2")
    assert index.dropped == {"sad/test (images in a split folder with no class folder)": 2}
    (tmp_path / "cf2" / "happy").rename(tmp_path / "cf2" / "sad" / "train")  # class-first: sad/train, sad/test
    with pytest.raises(FervidError, match=r"split folders inside class folders \(sad/test/...\): fervid expects <split>/<class>/"):
        read_dataset(tmp_path / "cf2")


def test_images_at_the_top_level_are_counted_as_dropped_and_named_when_nothing_else_is_there(tmp_path):
    """Photos beside the class folders, or a class folder given itself, were left out without a word."""
    image = pattern_face(0, np.random.default_rng(0))
    (tmp_path / "d" / "happy").mkdir(parents=True)
    for name in ["happy/0.png", "top0.png", "top1.jpg", ".hidden.png"]:
        cv2.imwrite(str(tmp_path / "d" / name), image)
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    assert read_dataset(tmp_path / "d").dropped == {"images at the top level, in no class folder": 2}
    cv2.imwrite(str(tmp_path / "d" / "d-samples.png"), image)  # data inspect's own grid there is no stray face
    assert read_dataset(tmp_path / "d").dropped == {"images at the top level, in no class folder": 2}
    (tmp_path / "d" / "d-samples.png").unlink()
    zipped = zip_folder(tmp_path / "d", tmp_path / "d.zip")  # a zip's top level too
    assert read_dataset(zipped).dropped == {"images at the top level, in no class folder": 2}
    (tmp_path / "d" / "happy" / "0.png").rename(tmp_path / "d" / "top2.png")
    (tmp_path / "d" / "happy").rmdir()
    with pytest.raises(FervidError, match=r"; 3 image\(s\) lie at the top level, in no class folder \(give the folder that holds"):
        read_dataset(tmp_path / "d")


def test_unknown_folders_in_several_splits_add_up_when_dropped(tmp_path):
    write_folder_dataset(tmp_path, 0, {"train": 1, "test": 1})
    for split, count in [("train", 1), ("test", 2)]:
        (tmp_path / split / "contempt").mkdir()
        for number in range(count):
            cv2.imwrite(str(tmp_path / split / "contempt" / f"{number}.png"), pattern_face(0, np.random.default_rng(1)))
    assert read_dataset(tmp_path, unknown="drop").dropped == {"contempt": 3}


@pytest.mark.parametrize("damage", ["missing_key", "wrong_length"])
def test_a_cache_entry_that_is_a_valid_npz_but_not_whole_is_rebuilt(tmp_path, damage):
    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    index = read_dataset(folder)
    expected = load_arrays(index).images
    arrays = {"images": np.zeros((7, 48, 48), np.uint8)} if damage == "missing_key" else {
        "images": np.zeros((3, 48, 48), np.uint8), "reasons": np.array([""] * 3), "digests": np.array(["x"] * 3)}
    np.savez(cache_path(index), **arrays)
    assert np.array_equal(load_arrays(index).images, expected)
    assert _load_cached(cache_path(index), len(index.frame)) is not None, "rebuilt whole"


def test_inspect_counts_readable_images_and_lists_unreadable_apart(tmp_path):
    from fervid.data.inspect import summarize

    folder = write_folder_dataset(tmp_path, 0, {"train": 2})
    (folder / "train" / "happy" / "junk.png").write_bytes(b"junk")
    summary, _ = summarize(read_dataset(folder))
    assert summary.counts.loc["happy", "train"] == 2 and len(summary.unreadable) == 1
    assert summary.imbalance == 1.0


def test_a_grid_path_that_is_not_png_or_cannot_be_written_is_refused(tmp_path):
    from fervid.data.inspect import check_grid_path

    check_grid_path(tmp_path / "g.PNG")
    with pytest.raises(FervidError, match=r"--grid g.jpg: the sample grid is a PNG; give a path ending in .png"):
        check_grid_path(Path("g.jpg"))
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(FervidError, match=r"taken.png: a folder, not a file"):
        check_grid_path(tmp_path / "taken.png")


def _central_headers(data: bytes) -> list[int]:
    """Offsets of a zip's central directory headers, read from its end record (no zip comment)."""
    end = data.rindex(b"PK\x05\x06")
    count = int.from_bytes(data[end + 10 : end + 12], "little")
    offset = int.from_bytes(data[end + 16 : end + 20], "little")
    offsets = []
    for _ in range(count):
        offsets.append(offset)
        lengths = [int.from_bytes(data[offset + at : offset + at + 2], "little") for at in (28, 30, 32)]
        offset += 46 + sum(lengths)
    return offsets


def _damaged_zip(tmp_path: Path, damage: str) -> Path:
    """A zip of 2 faces per class whose first member is damaged as ``damage`` says; headers are patched
    in place, as a bad download or an unsupported compressor leaves them."""
    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    target = tmp_path / f"{damage}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED if damage == "zlib" else zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as archive:
        first = archive.infolist()[0]
    start = first.header_offset + 30 + len(first.filename.encode())  # the member's data
    central = _central_headers(bytes(data))[0]
    if damage == "crc":
        data[start + 60] ^= 0xFF  # a flipped byte inside the stored PNG: the CRC no longer matches
    elif damage == "zlib":
        data[start : start + 8] = b"\xff" * 8  # not a deflate stream
    elif damage == "method":  # Deflate64 (method 9), which Python's zipfile cannot decompress
        data[first.header_offset + 8 : first.header_offset + 10] = (9).to_bytes(2, "little")
        data[central + 10 : central + 12] = (9).to_bytes(2, "little")
    elif damage == "encrypted":  # the general purpose flag's bit 0, as a password-protected zip has
        data[first.header_offset + 6] |= 0x1
        data[central + 8] |= 0x1
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(("damage", "reason"), [
    ("crc", r"damaged in the zip \(Bad CRC-32\)"),
    ("zlib", r"damaged in the zip \(Error -3 while decompressing"),
    ("method", r"compressed in a way Python's zipfile cannot read"),
])
def test_a_damaged_zip_member_is_one_unreadable_image_not_a_crash(tmp_path, damage, reason):
    import re

    arrays = load_arrays(read_dataset(_damaged_zip(tmp_path, damage)))
    assert len(arrays) == 13
    assert [source for source, _ in arrays.failed] == ["train/angry/0000.png"]
    assert re.match(reason, arrays.failed[0][1]), arrays.failed


def test_a_password_protected_zip_is_refused_in_one_line(tmp_path):
    path = _damaged_zip(tmp_path, "encrypted")
    with pytest.raises(FervidError, match=r"encrypted.zip: password-protected \(encrypted\) zip: extract it first"):
        read_dataset(path)


def test_zip_members_with_backslash_separators_are_indexed_with_slashes_and_read(tmp_path):
    """Windows PowerShell 5.1's Compress-Archive writes ``train\\happy\\0.png``."""
    folder = write_folder_dataset(tmp_path / "d", 0, {"train": 1, "validation": 1})
    target = tmp_path / "windows.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.writestr(zipfile.ZipInfo("\\".join(path.relative_to(folder).parts)), path.read_bytes())
    index = read_dataset(target)
    assert index.splits == ["train", "validation"] and "validation/happy/0000.png" in set(index.frame["source"])
    windows, plain = load_arrays(index, "validation"), load_arrays(read_dataset(folder), "validation")
    assert not windows.failed and np.array_equal(windows.images, plain.images)
    assert fingerprint(index) == fingerprint(read_dataset(target))


def download_error(folder, packed: bool) -> str:
    """The error reading ``folder`` as a dataset gives, as it is or zipped beside it (``packed``)."""
    path = zip_folder(folder, folder.with_suffix(".zip")) if packed else folder
    with pytest.raises(FervidError) as error:
        read_dataset(path)
    return str(error.value)


@pytest.mark.parametrize("packed", [True, False])
def test_a_download_holding_a_csv_and_a_tarball_says_to_pass_the_csv(tmp_path, packed):
    """Kaggle's FER2013 challenge download: icml_face_data.csv and fer2013.tar.gz, no image folders."""
    folder = tmp_path / "challenge"
    folder.mkdir()
    (folder / "icml_face_data.csv").write_text("emotion, Usage, pixels\n")
    (folder / "fer2013.tar.gz").write_bytes(b"\x1f\x8b")
    message = download_error(folder, packed)
    assert "holds fer2013.tar.gz, icml_face_data.csv but no images in class folders;" in message
    assert message.endswith("pass the .csv (fervid reads FER2013's CSV directly)")
    assert ("extract it and pass" in message) is packed


def test_files_in_class_folders_without_an_image_suffix_are_counted_as_dropped(tmp_path):
    write_folder_dataset(tmp_path, 0, {"train": 1})
    for name in ["happy/a.heic", "happy/b.heic", "sad/notes.txt", "sad/.DS_Store", "sad/README"]:
        (tmp_path / "train" / name).write_bytes(b"x")
    (tmp_path / "train" / "list.txt").write_text("not in a class folder")
    jpeg = cv2.imencode(".jpg", pattern_face(3, np.random.default_rng(0)))[1].tobytes()
    (tmp_path / "train" / "happy" / "c.JFIF").write_bytes(jpeg)
    index = read_dataset(tmp_path)
    assert index.dropped == {"files in class folders without an image suffix (.heic, .txt, no suffix)": 4}
    arrays = load_arrays(index)
    assert len(arrays) == 8 and not arrays.failed  # the .JFIF is a JPEG, read like one


def test_split_names_take_aliases_and_an_unknown_one_is_refused(tmp_path):
    index = read_dataset(write_folder_dataset(tmp_path, 0, {"train": 1, "validation": 2}))
    assert len(load_arrays(index, "val")) == 14 and len(load_arrays(index, "Validation")) == 14
    assert len(index.split("dev")) == 14 and len(index.split("training")) == 7
    with pytest.raises(FervidError, match=r"^unknown split 'valdation': use train, validation or test \(or an alias: "):
        load_arrays(index, "valdation")
    with pytest.raises(FervidError, match=r"^unknown split 'holdout': use train, validation or test"):
        index.split("holdout")


def _csv_without_usage_values(path: Path) -> Path:
    good = " ".join(["100"] * 2304)
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{row % 7},{good},\n" for row in range(5)))
    return path


def test_when_nothing_can_be_read_the_error_gives_the_most_common_reason(tmp_path):
    path = _csv_without_usage_values(tmp_path / "fer.csv")
    arrays = load_arrays(read_dataset(path), "train")
    assert len(arrays) == 0 and arrays.common_failure() == "most often: no Usage value (5 of 5)"
    arrays.failed = [("line 2", "no Usage value"), ("line 3", "a row cut short")]  # no reason repeats
    assert arrays.common_failure() == "each for its own reason, e.g. no Usage value"
    arrays.failed = []
    result = subprocess.run([sys.executable, "-m", "fervid", "data", "inspect", str(path), "--grid", str(tmp_path / "g.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"fervid: error: {path}: none of the 5 images could be read; most often: no Usage value (5 of 5)"]


def test_training_data_that_cannot_be_read_names_the_most_common_reason(tmp_path):
    from fervid.training.config import TrainConfig
    from fervid.training.dataset import load_training_data

    path = _csv_without_usage_values(tmp_path / "fer.csv")
    with pytest.raises(FervidError, match=r"none of the 'train' images could be read; most often: no Usage value \(5 of 5\)$"):
        load_training_data(TrainConfig(data=str(path), arch="compact"))


def test_symlinked_split_and_class_folders_are_read_and_a_symlink_cycle_ends(tmp_path):
    elsewhere = write_folder_dataset(tmp_path / "elsewhere", 0, {"validation": 1, "train": 1})
    root = write_folder_dataset(tmp_path / "data", 0, {"train": 1})
    (root / "validation").symlink_to(elsewhere / "validation", target_is_directory=True)
    shutil.rmtree(root / "train" / "sad")
    (root / "train" / "sad").symlink_to(elsewhere / "train" / "sad", target_is_directory=True)
    (root / "train" / "happy" / "loop").symlink_to(root, target_is_directory=True)  # a cycle back to the root
    index = read_dataset(root)
    assert index.splits == ["train", "validation"]
    assert index.counts()["train"].tolist() == [1] * 7 and index.counts()["validation"].tolist() == [1] * 7
    assert len(load_arrays(index)) == 14


def test_a_binary_file_named_csv_is_refused_without_printing_its_bytes(tmp_path):
    """Its "header" was echoed whole: control bytes and NULs that garble the terminal."""
    path = tmp_path / "faces.csv"
    path.write_bytes(b"\x00\x01\x02garbage\xc3\xbf\x1b[31m" * 40)  # valid UTF-8, full of control bytes
    with pytest.raises(FervidError, match=r"faces.csv: CSV needs columns emotion,pixels\[,Usage\]") as error:
        read_dataset(path)
    message = str(error.value)
    assert message.isprintable() and len(message) < len(str(path)) + 200


def test_a_dataset_only_in_a_hidden_folder_says_it_was_left_out(tmp_path):
    """A zip of .faces/train/... read as empty, with no word of the images it skipped as hidden."""
    write_folder_dataset(tmp_path / "d" / ".faces", 0, {"train": 1})
    archive = zip_folder(tmp_path / "d", tmp_path / "hidden.zip")
    with pytest.raises(FervidError, match=r"no images in class folders .*; 7 image\(s\) in hidden folders such as \.faces/ "
                                          r"were left out \(names starting with '\.' are never read\)$"):
        read_dataset(archive)


def test_images_loose_in_a_split_folder_are_named_when_nothing_else_is_found(tmp_path):
    """train/*.png with no class folders between said only 'no images in class folders'."""
    import cv2

    (tmp_path / "d" / "train").mkdir(parents=True)
    for index in range(3):
        cv2.imwrite(str(tmp_path / "d" / "train" / f"{index}.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(FervidError, match=r"no images in class folders .*; images lie in split folders with no class "
                                          r"folder: train \(3\) \(move each into its class's folder\)$"):
        read_dataset(tmp_path / "d")


@pytest.mark.parametrize("packed", [True, False])
def test_a_download_holding_a_zip_says_to_pass_the_zip(tmp_path, packed):
    """A folder (or a zip) whose only content is the dataset's own zip looked like an empty dataset."""
    inner = zip_folder(write_folder_dataset(tmp_path / "faces", 0, {"train": 1}), tmp_path / "faces.zip")
    folder = tmp_path / "download"
    folder.mkdir()
    shutil.copyfile(inner, folder / "faces.zip")
    message = download_error(folder, packed)
    assert "holds faces.zip but no images in class folders;" in message
    assert message.endswith("pass the .zip (fervid reads a zip of class folders directly)")
    assert ("extract it and pass" in message) is packed


@pytest.mark.parametrize("packed", [False, True])
def test_collections_whose_files_share_names_but_not_content_are_both_read(tmp_path, capsys, packed):
    """2019/ and 2020/ each numbering their files 0000.png... were taken for one copy of the other:
    half the data left out, with a warning that said 'file for file'."""
    write_folder_dataset(tmp_path / "two" / "2019", 0, {"train": 2}, seed=1)
    write_folder_dataset(tmp_path / "two" / "2020", 0, {"train": 2}, seed=2)
    data = zip_folder(tmp_path / "two", tmp_path / "two.zip") if packed else tmp_path / "two"
    assert read_dataset(data).counts()["train"].tolist() == [4] * 7
    assert capsys.readouterr().err == ""


def test_a_zip_whose_member_names_start_with_dot_slash_still_reads_its_copy_once(tmp_path, capsys):
    """Names rebuilt from their parts ('images/train/...') missed './images/train/...' in the size
    table: a KeyError traceback."""
    kaggle = write_folder_dataset(tmp_path / "k" / "images", 0, {"train": 1, "validation": 1})
    shutil.copytree(kaggle, kaggle / "images")
    archive = tmp_path / "kaggle.zip"
    with zipfile.ZipFile(archive, "w") as packed:  # writestr keeps the name as given (write() normalizes it)
        for path in sorted((tmp_path / "k").rglob("*.png")):
            packed.writestr("./" + path.relative_to(tmp_path / "k").as_posix(), path.read_bytes())
    assert read_dataset(archive).counts()["train"].tolist() == [1] * 7
    assert "repeats images/ file for file" in capsys.readouterr().err


def test_images_whose_names_are_not_utf8_are_counted_as_dropped_not_a_crash(tmp_path):
    """A Latin-1 name (b'caf\\xe9.png') was a UnicodeEncodeError traceback from pandas/pyarrow."""
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    shutil.copy(data / "train" / "happy" / "0000.png", bytes(data / "train" / "happy") + b"/caf\xe9.png")
    index = read_dataset(data)
    assert index.counts()["train"].tolist() == [1] * 7
    assert index.dropped == {"images whose paths are not UTF-8, in a file or folder name (rename them, e.g. with convmv, to read them)": 1}


def test_links_that_point_nowhere_are_counted_as_dropped(tmp_path):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    (data / "train" / "sad" / "gone.png").symlink_to(tmp_path / "missing.png")
    (data / "train" / "sad" / "notes.txt").symlink_to(tmp_path / "missing.txt")  # not an image: not counted as one
    (data / "train" / "sad" / ".hidden.png").symlink_to(tmp_path / "missing.png")
    index = read_dataset(data)
    assert index.counts()["train"].tolist() == [1] * 7 and index.dropped == {"links that point nowhere": 1}


def test_a_class_folder_beside_split_folders_is_read_as_train_with_a_warning(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1, "val": 1})
    shutil.copytree(data / "val" / "happy", data / "happy")
    index = read_dataset(data)
    assert index.counts()["train"]["happy"] == 2
    assert capsys.readouterr().err == (f"warning: {data}: class folders beside the split folders, read as train: happy (1) "
                                       "(move them into a split folder to say which split they are)\n")


def test_an_image_a_reader_refuses_is_one_unreadable_face_not_a_failed_load(tmp_path):
    """A TIFF of negative int16 raised a plain FervidError from the decoder: the whole load failed
    with a message naming no file."""
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    cv2.imwrite(str(data / "train" / "sad" / "negative.tiff"), np.full((48, 48, 4), -3, np.int16))
    arrays = load_arrays(read_dataset(data), "train")
    assert len(arrays) == 7 and len(arrays.failed) == 1
    source, reason = arrays.failed[0]
    assert source.endswith("negative.tiff") and "int16 image with values -3..-3" in reason


def test_csv_rows_that_are_big_too_long_a_number_or_after_a_quoted_blank_line_are_read_right(tmp_path):
    """A 200x200 row passed Python csv's 131,072-character field limit (the whole file refused); a
    20-digit token was an OverflowError traceback; a line holding only "" is a row to pandas but
    was skipped when fields were counted, so the stray field of one row was blamed on the row before."""
    good = " ".join(["100"] * 2304)
    big = " ".join(["90"] * 200 * 200)
    path = tmp_path / "fer.csv"
    path.write_text(f'emotion,pixels,Usage\n""\n3,{good},Training\n0,{good},Training,x\n5,{big},Training\n'
                    f"4,99999999999999999999 {good[4:]},Training\n")
    index = read_dataset(path)
    arrays = load_arrays(index, "train")
    assert len(arrays) == 2 and sorted(arrays.labels.tolist()) == [EXPRESSIONS.index("happy"), EXPRESSIONS.index("surprise")]
    assert sorted(arrays.failed) == [("line 4", "more fields than the header's 3"), ("line 6", "pixels are not integers")]


def test_a_zip_entry_repeating_a_name_is_counted_and_the_read_copy_is_the_one_checked(tmp_path):
    """A zip appended to holds train/happy/0.png twice: one row was kept without a word, its size
    and CRC from the first entry while zipfile reads the last."""
    import warnings
    import zipfile

    import cv2

    first, second = (cv2.imencode(".png", np.full((48, 48), value, np.uint8))[1].tobytes() for value in (10, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name, as it should
        with zipfile.ZipFile(tmp_path / "twice.zip", "w") as archive:
            archive.writestr("train/happy/0.png", first)
            archive.writestr("train/happy/0.png", second)
            archive.writestr("train/sad/1.png", first)
    index = read_dataset(tmp_path / "twice.zip")
    assert len(index.frame) == 2
    assert index.dropped == {"zip entries whose name an earlier entry already has (the last entry of each name is read)": 1}
    happy = load_arrays(index, "train")
    assert happy.images[list(happy.sources).index("train/happy/0.png")].mean() == 200, "the entry read is the last one (200, not 10)"


def test_map_does_not_turn_a_folder_beside_the_splits_into_a_class(tmp_path):
    """--map holdout=happy made holdout/sad/ pass as a class folder, its faces read as train's sad
    while the warning said the map mapped nothing."""
    write_folder_dataset(tmp_path / "d", 0, {"train": 1, "val": 1, "holdout": 2})
    with pytest.raises(FervidError, match=r"beside the split folders .*: d/holdout \(14\); rename them or drop"):
        read_dataset(tmp_path, mapping={"holdout": "happy"})
    dropped = read_dataset(tmp_path, unknown="drop", mapping={"holdout": "sad"})
    assert dropped.dropped == {"holdout": 14} and dropped.counts()["train"].sum() == 7


@pytest.mark.parametrize("packed", [True, False])
def test_an_image_beside_the_splits_in_a_wrapping_folder_is_dropped_not_a_class(tmp_path, packed):
    """fer2013/preview.jpg next to fer2013/train/ stopped the read as 'folders that are not
    expression classes: fer2013', where the same image at the top level is a dropped line."""
    write_folder_dataset(tmp_path / "wr" / "fer2013", 0, {"train": 1, "validation": 1})
    cv2.imwrite(str(tmp_path / "wr" / "fer2013" / "preview.jpg"), pattern_face(0, np.random.default_rng(0)))
    path = zip_folder(tmp_path / "wr", tmp_path / "wr.zip") if packed else tmp_path / "wr"
    index = read_dataset(path)
    assert index.dropped == {"images at the top level, in no class folder": 1}
    assert index.counts()["train"].sum() == 7 and index.counts()["validation"].sum() == 7



@pytest.mark.parametrize("packed", [False, True])
def test_an_image_beside_the_class_folders_in_a_wrapping_folder_is_dropped_not_a_class(tmp_path, packed):
    """mydata/preview.jpg next to mydata/happy/ stopped the read as 'folders that are not expression
    classes: mydata'; beside split folders it was already a dropped line."""
    write_folder_dataset(tmp_path / "wr" / "mydata", 0, {"": 2})
    cv2.imwrite(str(tmp_path / "wr" / "mydata" / "preview.jpg"), pattern_face(0, np.random.default_rng(0)))
    path = zip_folder(tmp_path / "wr", tmp_path / "wr.zip") if packed else tmp_path / "wr"
    index = read_dataset(path)
    assert index.dropped == {"images at the top level, in no class folder": 1} and index.counts()["train"].sum() == 14


def test_symbolic_links_stored_in_a_zip_are_named_not_read_as_corrupt_images(tmp_path):
    """zip -y stores a link as an entry holding its target's path: read as a corrupt image, and a
    linked class folder's images vanished without a word."""
    write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    archive = zip_folder(tmp_path / "d", tmp_path / "d.zip")
    with zipfile.ZipFile(archive, "a") as bundle:
        for name, target in (("train/happy/linked.png", "0000.png"), ("validation/sad", "../train/sad")):
            link = zipfile.ZipInfo(name)
            link.external_attr = (0o120777 << 16)  # what zip -y writes for a symlink
            bundle.writestr(link, target)
    index = read_dataset(archive)
    assert index.dropped == {"symbolic links stored in the zip (zip -y stores a link, not the files it points to: zip "
                             "without -y)": 2}
    assert index.counts()["train"].sum() == 14 and load_arrays(index, "train").failed == []


def test_a_zip_whose_names_are_marked_utf8_but_are_not_is_one_line(tmp_path):
    """A name flagged as UTF-8 that is not (a Latin-1 café.jpg) made Python's zipfile raise a
    UnicodeDecodeError: a traceback from data inspect, train and evaluate."""
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("train/happy/cafX.jpg", b"jpeg")
    data = bytearray(archive.read_bytes())
    for start in range(len(data) - 3):  # the name in both headers: its byte X made Latin-1's é, flag bit 11 set
        if data[start:start + 4] == b"cafX":
            data[start + 3] = 0xE9
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature)
        data[at + flag_at + 1] |= 0x08  # the general-purpose flag's bit 11 (UTF-8 names), in its second byte
    archive.write_bytes(bytes(data))
    with pytest.raises(FervidError, match=r"bad\.zip: not a readable zip file \(a file name in it is marked as UTF-8 but is not; "):
        read_dataset(archive)


def test_when_every_folder_is_left_out_the_error_says_which_and_why(tmp_path):
    """--unknown drop over a dataset of other classes said only 'no images in class folders'."""
    write_folder_dataset(tmp_path / "pets", 0, {"": 1})
    for folder in (tmp_path / "pets").iterdir():
        folder.rename(tmp_path / "pets" / f"pet-{folder.name}")
    with pytest.raises(FervidError, match=r"; all 7 other image\(s\) are in folders that are not expression classes, left out by "
                                          r"--unknown drop: pet-"):
        read_dataset(tmp_path / "pets", unknown="drop")

@pytest.mark.parametrize("tarball", ["fer.tar.bz2", "fer.tbz2", "fer.tar.xz", "fer.txz"])
def test_every_common_tarball_is_named_in_the_error(tmp_path, tarball):
    folder = tmp_path / "tb"
    folder.mkdir()
    (folder / tarball).write_bytes(b"BZh" if "bz" in tarball else b"\xfd7zXZ")
    assert download_error(folder, False) == (f"{folder}: holds {tarball} but no images in class folders; extract the "
                                             "tarball and pass the folder it makes")


def _add_zip_bomb(archive: Path, name: str = "train/sad/bomb.jpg", mib: int = 520) -> Path:
    """Append a member of ``mib`` MiB of zeros (about 2 MB deflated), over the 512 MiB a zipped image may unpack to."""
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle, bundle.open(name, "w") as member:
        block = bytes(1 << 20)
        for _ in range(mib):
            member.write(block)
    return archive


def test_a_zip_bomb_member_is_one_unreadable_image_never_read_into_memory(tmp_path):
    """A member of a few MB that unpacks to gigabytes of zeros was read whole before any check (3.2 GB
    of memory for a 1.5 GB member): it is now refused by the size the zip declares, one unreadable
    image with its reason, and the rest of the dataset loads."""
    archive = _add_zip_bomb(zip_folder(write_folder_dataset(tmp_path / "d", 1), tmp_path / "d.zip"))
    code = ("import json, sys\n" + PEAK_MIB_SOURCE +
            "from fervid.data import load_arrays, read_dataset\n"
            "arrays = load_arrays(read_dataset(sys.argv[1]))\n"
            "print(json.dumps({'faces': len(arrays), 'failed': arrays.failed,\n"
            "                  'rss_mib': peak_mib()}))\n")
    result = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["faces"] == 7
    assert found["failed"] == [["train/sad/bomb.jpg", "over 512 MiB unpacked, more than fervid reads of one image in a zip "
                                                      "(a zip bomb?); extract it to read it as a file"]]
    assert found["rss_mib"] < 450, "the 520 MiB member was read into memory"


@pytest.mark.parametrize("name", ["faces.zip", "fer2013.csv"])
def test_a_named_pipe_given_as_a_dataset_is_refused_not_waited_on_forever(tmp_path, name):
    """``mkfifo faces.zip; fervid data inspect faces.zip`` (or evaluate, or train) blocked opening the
    pipe until a writer came, forever."""
    import os

    pipe = tmp_path / name
    os.mkfifo(pipe)
    # In a child first, with a timeout: read in this process, the old wait would hang the test run.
    result = subprocess.run([sys.executable, "-m", "fervid", "data", "inspect", str(pipe)], capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.strip() == f"fervid: error: {pipe}: not a regular file (a device, pipe or socket); " \
        "give a folder, a .zip or a .csv file", result.stderr
    with pytest.raises(FervidError, match=r"not a regular file \(a device, pipe or socket\); give a folder, a .zip or a .csv file$"):
        read_dataset(pipe)
