"""fervid.images: the one place every command decides what an image is, finds them and decodes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.errors import FervidError
from fervid.images import (
    UNREADABLE_WHY, UnreadableImage, decode_image, find_images, is_hidden, is_image_name, read_image,
    walk_files,
)
from fervid.pil_images import pil_as_gray
from fervid.preprocess import to_gray
from fervid.transparency import may_be_transparent


@pytest.mark.parametrize(
    ("parts", "hidden"),
    [(("photos", "a.jpg"), False), (("photos", ".a.jpg"), True), ((".cache", "a.jpg"), True), (("__MACOSX", "x", "._a.jpg"), True)],
)
def test_hidden_paths(parts: tuple[str, ...], hidden: bool) -> None:
    assert is_hidden(parts) is hidden


def test_find_images_takes_every_image_suffix_in_any_case_and_leaves_hidden_files_out(tmp_path: Path) -> None:
    names = ["a.jpg", "B.PNG", "sub/c.webp", "g.gif", "h.jpeg", ".hidden/d.jpg", "__MACOSX/sub/._c.webp", "._a.jpg", "notes.txt", "clip.mp4"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()  # a folder named like an image is not one
    found = [path.relative_to(tmp_path).as_posix() for path in find_images(tmp_path)]
    assert found == ["B.PNG", "a.jpg", "g.gif", "h.jpeg", "sub/c.webp"]


def test_find_images_does_not_leave_out_a_folder_given_inside_a_hidden_one(tmp_path: Path) -> None:
    """Hidden is judged below the folder asked for: photos kept under ~/.archive are still found."""
    folder = tmp_path / ".archive" / "photos"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"x")
    assert find_images(folder) == [folder / "a.png"]


def test_decode_image_reads_what_it_wrote_and_names_what_it_cannot() -> None:
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    encoded = cv2.imencode(".png", image)[1].tobytes()
    assert np.array_equal(decode_image(encoded), image)
    gray = decode_image(encoded, cv2.IMREAD_GRAYSCALE).astype(int)  # libpng's own conversion rounds differently
    assert gray.shape == (20, 30) and np.abs(gray - cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).max() <= 1
    with pytest.raises(UnreadableImage, match=r"empty file \(0 bytes\)"):
        decode_image(b"")
    with pytest.raises(UnreadableImage, match=f"not a readable image \\({UNREADABLE_WHY}\\)"):
        decode_image(b"\xff\xd8\xff\xe0 cut short")


def test_read_image_says_what_the_path_is_instead(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    (tmp_path / "faces.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    for path, message in [(tmp_path, "a folder, not an image"), (tmp_path / "gone.jpg", "no such file"),
                          (tmp_path / "clip.mp4", "a video, not an image"), (tmp_path / "broken.jpg", "broken.jpg: not a readable image"),
                          (tmp_path / "faces.zip", r"faces.zip: a zip, not an image \(fervid analyze .*faces.zip reads the images in a zip\)")]:
        with pytest.raises(FervidError, match=message):
            read_image(path)


def test_an_image_over_opencvs_pixel_limit_is_one_unreadable_image_everywhere(tmp_path: Path) -> None:
    """OpenCV raises its own exception (not None) past OPENCV_IO_MAX_IMAGE_PIXELS; every reader turns it into
    a reason for that image: the training loader skips it, predict and analyze go on with the next."""
    cv2.imwrite(str(tmp_path / "big.png"), np.full((200, 200, 3), 120, np.uint8))
    script = (
        "import sys\n"
        "from fervid.images import TooManyPixels, read_image\n"
        "from fervid.data.decode import UnreadableImage, decode_image_bytes\n"
        "try:\n    read_image(sys.argv[1])\nexcept TooManyPixels as error:\n    print(error)\n"
        "try:\n    decode_image_bytes(open(sys.argv[1], 'rb').read())\nexcept UnreadableImage as error:\n    print(error)\n"
    )
    limited = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "10000"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.png")], capture_output=True, text=True, env=limited)
    limit = "an image over 10,000 pixels, the limit set by OPENCV_IO_MAX_IMAGE_PIXELS"
    assert result.stdout.splitlines() == [f"{tmp_path / 'big.png'}: {limit}", limit], result.stderr
    fervid = str(Path(sys.executable).parent / "fervid")
    cv2.imwrite(str(tmp_path / "small.png"), np.full((50, 50, 3), 120, np.uint8))
    analyze = subprocess.run([fervid, "analyze", str(tmp_path), "--out", str(tmp_path / "faces.csv")],
                             capture_output=True, text=True, env=limited)
    assert analyze.returncode == 0 and f"big.png: {limit}" in analyze.stderr and "2 sources: 1 ok, 1 error;" in analyze.stderr


@pytest.mark.parametrize("name", ["a.jfif", "b.JPE", "c.avif", "d.jpg"])
def test_jpeg_under_other_names_and_avif_are_image_names(name: str) -> None:
    assert is_image_name(name) and not is_image_name(name + ".txt")


def test_walk_files_follows_symlinked_folders_and_ends_on_a_cycle(tmp_path: Path) -> None:
    """Path.rglob on Python 3.11 does not enter linked folders, which left a linked split out."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "b.png").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "linked-again").symlink_to(outside, target_is_directory=True)  # two links to one folder: both walked
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a cycle: walked once, not forever
    (outside / "deep" / "back").symlink_to(outside, target_is_directory=True)  # a cycle inside the linked folder
    (root / "broken.png").symlink_to(tmp_path / "gone.png")  # a dangling link is not a file
    found = sorted(path.relative_to(root).as_posix() for path in walk_files(root))
    assert found == ["linked-again/deep/b.png", "linked/deep/b.png", "sub/a.png"]
    assert sorted(path.relative_to(root).as_posix() for path in find_images(root)) == found


def test_folder_searches_leave_out_the_annotated_copies_predict_listed_below_them(tmp_path: Path) -> None:
    """`fervid predict .` writes its copies into ./runs/predict: analyze, live and a second predict
    over the same folder must not take them for more photos (each face would count twice)."""
    from fervid.analyze.inputs import expand_inputs
    from fervid.runtime.sources import open_source

    copies = tmp_path / "runs" / "predict"
    copies.mkdir(parents=True)
    for path in (tmp_path / "photo.png", copies / "photo.png", copies / "mine.png"):
        cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    (copies / ".fervid-predict").write_text("photo.png\n")  # mine.png was put there by hand: still a photo
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == ["photo.png", "runs/predict/mine.png"]
    assert sorted(item.relative for item in expand_inputs([tmp_path])) == ["photo.png", "runs/predict/mine.png"]
    with open_source(tmp_path) as source:
        assert sum(1 for _ in source) == 2
    assert [p.name for p in find_images(copies)] == ["mine.png", "photo.png"]  # the folder itself, asked for: read whole


def test_expand_inputs_finds_images_in_symlinked_folders(tmp_path: Path) -> None:
    from fervid.analyze.inputs import expand_inputs

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "album").mkdir()
    (tmp_path / "album" / "own.png").write_bytes(b"x")
    (tmp_path / "album" / "shared").symlink_to(tmp_path / "photos", target_is_directory=True)
    (tmp_path / "album" / "shared" / "self").symlink_to(tmp_path / "album", target_is_directory=True)
    items = expand_inputs([tmp_path / "album"])
    assert [item.relative for item in items] == ["own.png", "shared/a.jpg"]


def transparent_picture() -> tuple[np.ndarray, np.ndarray]:
    """A 40x60 BGRA picture whose hidden pixels are noise, and how a viewer shows it (on white)."""
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    picture[..., 3] = 0
    picture[:20, :, 3] = 255  # top half opaque
    picture[20:, :10, 3] = 128  # a half-transparent strip
    alpha = picture[..., 3:].astype(np.float32) / 255
    shown = (picture[..., :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    return picture, shown


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", ["PNG", "WEBP"])
def test_transparent_images_are_read_on_white_and_upright_by_their_exif_orientation(suffix: str, orientation: int) -> None:
    """A cut-out portrait was read with the pixels under its transparent parts (often black or old
    background), which no viewer shows; OpenCV's alpha-keeping decode also ignores the EXIF turn."""
    image_module = pytest.importorskip("PIL.Image")
    ops = pytest.importorskip("PIL.ImageOps")
    import io

    picture, _ = transparent_picture()
    exif = image_module.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image_module.fromarray(picture[..., [2, 1, 0, 3]], "RGBA").save(buffer, suffix, exif=exif, lossless=True)
    data = buffer.getvalue()
    upright = np.asarray(ops.exif_transpose(image_module.open(io.BytesIO(data))).convert("RGBA")).astype(np.float32)
    alpha = upright[..., 3:] / 255
    expected = (upright[..., 2::-1] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)  # as PIL turns it, on white
    decoded = decode_image(data)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).max() <= 1
    loaded = decode_image(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)  # the dataset loader's flags
    assert np.abs(to_gray(loaded).astype(int) - to_gray(expected)).max() <= 1
    assert decode_image(data, cv2.IMREAD_UNCHANGED).shape == (40, 60, 4), "UNCHANGED keeps the alpha as it is"


def test_only_files_that_can_be_transparent_are_decoded_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    import fervid.transparency

    picture, shown = transparent_picture()
    decodes = []
    real_decode = cv2.imdecode
    monkeypatch.setattr(fervid.transparency.cv2, "imdecode", lambda *args: decodes.append(1) or real_decode(*args))
    for opaque in (".png", ".jpg", ".webp"):
        decode_image(cv2.imencode(opaque, shown)[1].tobytes())
    assert len(decodes) == 3, "an opaque image is decoded once"
    decode_image(cv2.imencode(".png", picture)[1].tobytes())
    assert len(decodes) == 5, "a transparent one twice: its colours upright, then its alpha"
    opaque_png = cv2.imencode(".png", picture[..., :3])[1].tobytes()
    assert not may_be_transparent(opaque_png) and not may_be_transparent(cv2.imencode(".jpg", shown)[1].tobytes())
    assert not may_be_transparent(cv2.imencode(".webp", shown)[1].tobytes())
    assert may_be_transparent(cv2.imencode(".png", picture)[1].tobytes())
    assert may_be_transparent(cv2.imencode(".webp", picture, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes())  # lossless
    deep = cv2.imencode(".png", picture.astype(np.uint16) * 257)[1].tobytes()  # 16-bit RGBA
    assert np.abs(decode_image(deep).astype(int) - shown).max() <= 1


@pytest.mark.parametrize("shape", [(257, 1), (257, 9), (3000, 2000), (20, 30)])
def test_the_turn_is_found_for_thin_small_and_photo_sized_pictures(shape: tuple[int, int]) -> None:
    """Shrinking to 32 px before turning picked no turn for a 257x1 strip turned 180 degrees."""
    from fervid.transparency import TURNS, turn_between

    picture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), (3, 3), 0)
    for index in (1, 2, 4, 7):
        turned = TURNS[index](picture)
        found = turn_between(picture, turned)
        assert found is not None and np.array_equal(found(picture), turned), index


def test_an_alpha_never_set_is_ignored_not_a_blank_white_picture() -> None:
    """Some exporters write RGBA with alpha 0 everywhere; laid on white, the whole photo vanished."""
    picture, _ = transparent_picture()
    picture[..., 3] = 0
    decoded = decode_image(cv2.imencode(".png", picture)[1].tobytes())
    assert np.array_equal(decoded, picture[..., :3])


def test_a_transparent_pil_image_is_read_on_white_as_its_file_is() -> None:
    image_module = pytest.importorskip("PIL.Image")
    picture, shown = transparent_picture()
    pil = image_module.fromarray(picture[..., [2, 1, 0, 3]], "RGBA")
    assert np.abs(pil_as_gray(pil).astype(int) - to_gray(shown)).max() <= 1
    assert np.abs(pil_as_gray(pil.convert("LA")).astype(int) - to_gray(shown)).max() <= 2


def test_a_float_pfm_image_is_read_by_the_float_rule_not_as_black() -> None:
    """OpenCV's 8-bit decode of a PFM truncated its 0..1 floats to 0 and 1: a black picture that was
    classified without a word. Now 0..1 is scaled like any float image, and other ranges refused."""
    picture = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    data = cv2.imencode(".pfm", picture)[1].tobytes()
    assert np.abs(decode_image(data).astype(int) - (picture * 255 + 0.5).astype(np.uint8)).max() == 0
    assert decode_image(data, cv2.IMREAD_GRAYSCALE).shape == (20, 30)
    assert decode_image(cv2.imencode(".pfm", picture[..., 0])[1].tobytes()).shape == (20, 30, 3)
    with pytest.raises(UnreadableImage, match="float32 image with values"):
        decode_image(cv2.imencode(".pfm", picture * 1000)[1].tobytes())


def test_a_float_tiff_is_read_by_the_float_rule_not_refused() -> None:
    """OpenCV's 8-bit decode refuses 32-bit float samples: a float TIFF was 'not a readable image'."""
    picture = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)
    expected = (picture * 255 + 0.5).astype(np.uint8)
    assert np.abs(decode_image(cv2.imencode(".tiff", picture)[1].tobytes()).astype(int) - expected).max() == 0
    gray = decode_image(cv2.imencode(".tiff", picture[..., 0] * 255)[1].tobytes(), cv2.IMREAD_GRAYSCALE)  # 0..255 floats
    assert gray.shape == (20, 30) and np.abs(gray.astype(int) - expected[..., 0]).max() <= 1
    with pytest.raises(UnreadableImage, match="float32 image with values"):
        decode_image(cv2.imencode(".tiff", picture * 1000)[1].tobytes())
    with pytest.raises(UnreadableImage, match="not a readable image"):
        decode_image(b"II*\0" + bytes(40))
    cut_out = np.zeros((10, 12, 4), np.float32)  # a float TIFF with alpha: laid on white as every format is
    cut_out[..., :3], cut_out[:5, :, 3] = 0.2, 1.0
    laid = decode_image(cv2.imencode(".tiff", cut_out)[1].tobytes())
    assert laid.shape == (10, 12, 3) and (laid[:5] == 51).all() and (laid[5:] == 255).all()



def test_a_float_tiff_is_read_without_opencv_warning_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """Tried at 8 bits first, each float TIFF printed OpenCV's "TIFFRGBAImageOK: Sorry, can not handle
    images with 32-bit samples" on the stderr of the app that read it."""
    from fervid.images import is_float_tiff

    picture = np.random.default_rng(2).random((20, 30, 3)).astype(np.float32)
    floats = [cv2.imencode(".tiff", image)[1].tobytes() for image in (picture, picture[..., 0])]
    capfd.readouterr()
    for data in floats:
        assert is_float_tiff(data) and decode_image(data).shape == (20, 30, 3)
    assert capfd.readouterr().err == ""
    assert is_float_tiff(cv2.imencode(".tiff", np.dstack([picture, picture[..., :1]]))[1].tobytes())  # 4 samples: at an offset
    whole = cv2.imencode(".tiff", (picture * 255).astype(np.uint8))[1].tobytes()
    assert not is_float_tiff(whole) and not is_float_tiff(floats[0][:9]) and not is_float_tiff(b"II*\0" + bytes(40))
    assert not is_float_tiff(cv2.imencode(".png", picture)[1].tobytes())

def png_chunk(kind: bytes, body: bytes, checksum: int | None = None) -> bytes:
    import zlib

    return len(body).to_bytes(4, "big") + kind + body + (zlib.crc32(kind + body) if checksum is None else checksum).to_bytes(4, "big")


def test_a_damaged_png_is_one_line_and_libpng_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """libpng wrote its own 'libpng error: ...' line on stderr, past OpenCV's log level, beside
    fervid's one-line error; a damaged PNG is now told from its chunks before OpenCV decodes it."""
    picture = np.random.default_rng(2).integers(0, 256, (40, 50, 3), np.uint8)
    data = cv2.imencode(".png", picture)[1].tobytes()
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside the image data
    for damaged, reason in ((data[:-12], "a PNG cut short"), (data[: len(data) // 2], "a PNG cut short"),
                            (bytes(flipped), "a damaged PNG: its IDAT chunk fails its checksum")):
        with pytest.raises(UnreadableImage, match=rf"^not a readable image \({reason}\)$"):
            decode_image(damaged)
    assert capfd.readouterr().err == ""
    end_of_header = 8 + 25  # a damaged text chunk is dropped (libpng skipped it, with its own warning line)
    with_bad_text = data[:end_of_header] + png_chunk(b"tEXt", b"a\0b", checksum=123) + data[end_of_header:]
    assert np.array_equal(decode_image(with_bad_text), picture)
    assert np.array_equal(decode_image(data + b"trailing bytes"), picture)
    transparent = cv2.imencode(".png", np.dstack([picture, np.full((40, 50), 255, np.uint8)]))[1].tobytes()
    bad_twice = png_chunk(b"tEXt", b"a\0b", checksum=1) + png_chunk(b"zTXt", b"c\0\0x", checksum=2)
    assert np.array_equal(decode_image(transparent[:end_of_header] + bad_twice + transparent[end_of_header:]), picture)
    assert capfd.readouterr().err == "", "libpng printed 'libpng warning: tEXt: CRC error'"
    for width, height in ((2_000_000, 2_000_000), (0, 40), (50, 1_000_001)):  # libpng printed three lines of its own
        header = png_chunk(b"IHDR", width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[16:21])
        with pytest.raises(UnreadableImage, match=rf"a PNG whose header says {width:,}x{height:,} pixels; libpng reads 1 to 1,000,000"):
            decode_image(data[:8] + header + data[8 + 25 :])
    assert capfd.readouterr().err == ""


def test_a_pfm_whose_header_opencv_rejects_is_unreadable_or_too_big_not_a_crash() -> None:
    """OpenCV raised its own cv2.error from the PFM branch: a 500 with a traceback in fervid serve."""
    from fervid.images import TooManyPixels

    with pytest.raises(UnreadableImage, match="not a readable image"):
        decode_image(b"PF\nabc def\n-1.0\n" + bytes(1000))
    with pytest.raises(TooManyPixels, match="pixels, the limit set by OPENCV_IO_MAX_IMAGE_PIXELS"):
        decode_image(b"PF\n90000 90000\n-1.0\n" + bytes(1000))


@pytest.mark.parametrize("value", ["64M", "1e9", " 5", "-5", "0", "", "99999999999999999999999"])
def test_a_pixel_limit_opencv_cannot_parse_is_one_line_not_an_abort(value: str, tmp_path: Path) -> None:
    """OpenCV parses OPENCV_IO_MAX_IMAGE_PIXELS in C++ at its first decode, and a value it cannot
    parse aborted the process (SIGABRT) with no fervid line: `fervid serve` never started."""
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.zeros((20, 20), np.uint8))
    result = subprocess.run([sys.executable, "-m", "fervid", "predict", str(photo), "--crops", "--no-save"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": value})
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"fervid: error: OPENCV_IO_MAX_IMAGE_PIXELS={value!r}: give a whole number of pixels, 1 or more, such as 100000000 "
        "(OpenCV also reads 64MB as 64 x 1024 x 1024 pixels)"]


@pytest.mark.parametrize("code", ["import fervid; fervid.Recognizer", "from fervid.runtime.recognizer import Recognizer",
                                  "import fervid.analyze.run"])
def test_a_pixel_limit_opencv_cannot_parse_is_an_error_in_python_not_an_abort(code: str) -> None:
    """OpenCV 4.14 parses the variable as `import cv2` loads it: the Python API, which imports cv2
    before any fervid code runs, aborted the interpreter (SIGABRT) with OpenCV's `stoull` line."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "64M"})
    zero = subprocess.run([sys.executable, "-c", "import fervid, cv2"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "0"})
    assert zero.returncode == 0, "0 is a value OpenCV parses: refused where images are read, never at import"
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        "fervid.errors.FervidError: OPENCV_IO_MAX_IMAGE_PIXELS='64M': give a whole number of pixels, 1 or more, such as "
        "100000000 (OpenCV also reads 64MB as 64 x 1024 x 1024 pixels)"), result.stderr


def test_the_pixel_limit_is_read_as_opencv_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from fervid.errors import FervidError
    from fervid.pixel_limit import pixel_limit

    monkeypatch.delenv("OPENCV_IO_MAX_IMAGE_PIXELS", raising=False)
    assert pixel_limit() == 1 << 30
    for value, pixels in (("100", 100), ("64MB", 64 << 20), ("3kb", 3 << 10), ("007", 7)):
        monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", value)
        assert pixel_limit() == pixels
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "64Mi")
    with pytest.raises(FervidError, match="give a whole number of pixels"):
        decode_image(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
    from fervid.runtime.recognizer import Recognizer

    with pytest.raises(FervidError, match="give a whole number of pixels"):  # Python API users: once, at the start
        Recognizer()


def test_a_pixel_limit_whose_suffix_takes_it_past_64_bits_is_refused_not_wrapped_to_0(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV multiplies by the suffix in 64 bits without a check: 17592186044416MB (2^64 pixels) was
    a limit of 0, and every image "too large"; fervid took it for 2^64."""
    from fervid.pixel_limit import pixel_limit

    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "17592186044416MB")
    with pytest.raises(FervidError, match=r"'17592186044416MB': 18,446,744,073,709,551,616 pixels, 2\^64 or more, which OpenCV "
                                          r"wraps round to 0; give a smaller limit"):
        pixel_limit()
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "17592186044415MB")  # just under 2^64: taken as it is
    assert pixel_limit() == (1 << 64) - (1 << 20)


def _png(width: int, height: int, depth: int, color_type: int, rows: list[bytes], *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG of raw (unfiltered) ``rows``, with ``chunks`` (kind, data) between its header and its pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(chunk(kind, data) for kind, data in chunks)
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


@pytest.mark.parametrize("depth", [2, 8, 16])
def test_a_gray_png_with_a_transparent_gray_key_is_read_on_white(depth: int, tmp_path: Path) -> None:
    """A gray PNG's tRNS chunk names one gray value as transparent; OpenCV's decode with alpha leaves
    it out, so the parts a viewer shows white kept their stored black."""
    import struct

    top = (1 << depth) - 1
    gray = [0] * 8 + [top * 2 // 3] * 8  # left half: the key (0), transparent; right half: an opaque gray
    if depth == 16:
        row = b"".join(struct.pack(">H", value) for value in gray)
    elif depth == 8:
        row = bytes(gray)
    else:  # four 2-bit pixels a byte
        row = bytes((a << 6) | (b << 4) | (c << 2) | d for a, b, c, d in zip(*[iter(gray)] * 4))
    data = _png(16, 16, depth, 0, [row] * 16, (b"tRNS", struct.pack(">H", 0)))
    (tmp_path / "cut-out.png").write_bytes(data)
    image = read_image(tmp_path / "cut-out.png")
    assert image[:, :8].min() == 255, "the transparent part is white"
    assert image[:, 8:].max() == image[:, 8:].min() == 170, "the opaque part as it is stored"
    assert to_gray(decode_image(data, cv2.IMREAD_GRAYSCALE))[:, :8].min() == 255
    plain = _png(16, 16, depth, 0, [row] * 16)  # the same picture without the key: nothing laid on white
    assert decode_image(plain)[:, :8].max() == 0


def test_an_avif_with_alpha_is_read_on_white() -> None:
    """OpenCV decodes an AVIF's alpha, but the header check never asked for it: the transparent parts
    kept their stored colour."""
    picture = np.zeros((16, 16, 4), np.uint8)
    picture[:, 8:] = (100, 100, 100, 255)
    try:
        ok, encoded = cv2.imencode(".avif", picture)
    except cv2.error:
        ok = False
    if not ok or cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) is None:
        pytest.skip("this OpenCV has no AVIF codec")
    data = encoded.tobytes()
    assert may_be_transparent(data)
    image = decode_image(data)
    assert image[:, :6].min() >= 250 and abs(int(image[:, 10:].mean()) - 100) <= 3
    opaque = cv2.imencode(".avif", picture[:, :, :3])[1].tobytes()
    assert not may_be_transparent(opaque), "an AVIF without an alpha plane is decoded once"


def test_a_file_of_values_no_rule_reads_is_named_and_gets_no_numpy_advice(tmp_path: Path) -> None:
    """A 16-bit RGBA PNG holding 0..255 said "uint16 image with values 100..200: ... convert it with
    .astype(np.uint8)" without the file's name; an int32 TIFF, "pass uint8 ...": advice for arrays."""
    low = np.dstack([np.full((8, 8, 3), 200, np.uint16), np.full((8, 8), 100, np.uint16)])
    cv2.imwrite(str(tmp_path / "low16.png"), low)
    cv2.imwrite(str(tmp_path / "big32.tif"), np.full((8, 8), 70000, np.int32))
    with pytest.raises(UnreadableImage, match=rf"^{tmp_path / 'low16.png'}: uint16 image with values 100\.\.200: .*saved as "
                                              r"16-bit; save it as 8-bit, or scale it to 0\.\.65535$"):
        read_image(tmp_path / "low16.png")
    with pytest.raises(UnreadableImage, match=rf"^{tmp_path / 'big32.tif'}: int32 image with values 70000\.\.70000: .*; save it "
                                              r"as 8-bit \(0\.\.255\), 16-bit \(0\.\.65535\) or float \(0\.\.1\)$"):
        read_image(tmp_path / "big32.tif")



@pytest.mark.parametrize("name, channels", [("low16.png", 3), ("low16-gray.png", 1), ("low16.tif", 3)])
def test_an_opaque_16_bit_file_holding_0_to_255_is_refused_not_read_black(tmp_path: Path, name: str, channels: int) -> None:
    """Without alpha such a file went through OpenCV's 8-bit decode, which keeps the high byte: a
    black picture (0..1), classified as a confident expression or found faceless, exit 0. The
    same picture at 16-bit scale (x257) still reads as itself."""
    rng = np.random.default_rng(0)
    picture = rng.integers(30, 230, (24, 24, channels) if channels == 3 else (24, 24)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / name), picture)
    for flags in (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE):
        with pytest.raises(UnreadableImage, match=r"^uint16 image with values \d+\.\.\d+: .*saved as 16-bit; save it as 8-bit"):
            decode_image((tmp_path / name).read_bytes(), flags)
    with pytest.raises(UnreadableImage, match=rf"^{tmp_path / name}: uint16 image"):
        read_image(tmp_path / name)
    cv2.imwrite(str(tmp_path / ("full-" + name)), picture * 257)
    full = read_image(tmp_path / ("full-" + name))
    expected = picture if channels == 3 else np.dstack([picture] * 3)
    assert full.dtype == np.uint8 and np.array_equal(full, expected.astype(np.uint8))
    black = np.zeros_like(picture)
    cv2.imwrite(str(tmp_path / ("black-" + name)), black)
    assert read_image(tmp_path / ("black-" + name)).max() == 0, "an all-black 16-bit file is a black picture, not refused"

def test_a_device_pipe_or_symlink_loop_is_named_for_what_it_is_not_missing(tmp_path: Path) -> None:
    """`fervid predict /dev/null`, a FIFO and `<(cat x.png)` said "no such file" of a path that is
    there; a symlink loop said it too (and predict's listing raised Path.resolve's RuntimeError)."""
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "loop1.jpg").symlink_to("loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to("loop1.jpg")
    (tmp_path / "dangling.jpg").symlink_to("nowhere.jpg")
    for path, message in [("/dev/null", "not a regular file (a device, pipe or socket); save the image to a file and give that"),
                          (tmp_path / "pipe.png", "not a regular file (a device, pipe or socket)"),
                          (tmp_path / "loop1.jpg", "a symlink loop (links that lead back to each other, never to a file)"),
                          (tmp_path / "dangling.jpg", "a symlink to nowhere.jpg, which does not exist")]:
        with pytest.raises(FervidError) as error:
            read_image(path)
        assert str(error.value).startswith(f"{path}: {message}")


def test_a_folder_lists_pfm_and_heic_photos_and_a_heic_is_named_as_unreadable(tmp_path: Path) -> None:
    """A .pfm was read when named but left out of a folder ("no images in this folder"); a .heic was
    silently left out, where an .avif OpenCV cannot read is listed as unreadable."""
    cv2.imwrite(str(tmp_path / "a.pfm"), np.full((8, 8, 3), 0.5, np.float32))
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    (tmp_path / "b.HEIC").write_bytes(heic)
    (tmp_path / "c.heif").write_bytes(heic)
    (tmp_path / "notes.txt").write_text("no photo")
    assert [path.name for path in find_images(tmp_path)] == ["a.pfm", "b.HEIC", "c.heif"]
    assert read_image(tmp_path / "a.pfm").max() == 128
    with pytest.raises(UnreadableImage, match=r"b.HEIC: not a readable image \(a HEIC/HEIF photo, a format OpenCV cannot read; "
                                              r"convert it to JPEG or PNG\)"):
        read_image(tmp_path / "b.HEIC")


def test_a_folder_that_cannot_be_listed_is_named_in_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A subfolder without read permission was left out without a word (os.walk drops errors unless
    asked); it is named as an unreadable file is. (Refused by os.scandir here: as root, permissions
    refuse nothing.)"""
    for name in ("open", "closed"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.zeros((4, 4), np.uint8))
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path) == str(tmp_path / "closed"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert find_images(tmp_path) == [tmp_path / "open" / "a.png"]
    assert f"warning: {tmp_path / 'closed'}: could not be read (Permission denied); the files in it are left out" in capsys.readouterr().err
