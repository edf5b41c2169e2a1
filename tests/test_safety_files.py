"""Hostile and careless input through files: every bad file is a clear error that loses nothing.

CSV headers and labels, images, size limits (IDX, .npy/.npz, CSV), corrupt NumPy files,
tampered model files, and the CSV that ``predict`` writes. Each case is checked in the library
(a ValueError naming the file) and, where a command reads it, as one line from the CLI.
"""

import csv
import io
import json
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
from test_cli import assert_one_line_error, run

from softmax_fast import datasets, persistence
from softmax_fast._io import InputError, read_image, read_inputs
from softmax_fast.datasets import SizeLimitError
from softmax_fast.estimator import SoftmaxRegression


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def two_class_rows(n=60, labels=("cat", "dog")):
    """CSV rows ``label,x0,x1`` of a separable 2-class problem, no header."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = labels[i % 2]
        x = rng.normal(size=2) + (3 if i % 2 else -3)
        rows.append(f"{label},{x[0]:.4f},{x[1]:.4f}")
    return rows


# ============================================================================================
# 1. CSV: header, BOM, labels
# ============================================================================================
def test_csv_without_header_and_string_labels_keeps_the_first_row(tmp_path):
    path = write(tmp_path / "animals.csv", "cat,1,2\ndog,3,4\ncat,5,6\n")
    X, y = datasets.load_file(path)
    assert X.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert y.tolist() == ["cat", "dog", "cat"]


def test_csv_byte_order_mark_is_not_data(tmp_path):
    headerless = tmp_path / "bom.csv"
    headerless.write_bytes(b"\xef\xbb\xbf1,0.1,0.2\n2,0.3,0.4\n1,0.5,0.6\n")
    X, y = datasets.load_file(headerless)
    assert y.tolist() == [1, 2, 1] and X.shape == (3, 2)
    assert datasets.load_features(headerless).shape == (3, 3)
    # With a header, the BOM must not hide the name of the label column either.
    named = tmp_path / "named.csv"
    named.write_bytes(b"\xef\xbb\xbfa,label\n0.5,7\n0.25,8\n")
    X, y = datasets.load_file(named)
    assert y.tolist() == [7, 8] and X.tolist() == [[0.5], [0.25]]


@pytest.mark.parametrize("text, n_rows", [
    ("a,b\n1,2\n3,4\n", 2),          # all text above numbers: a header
    ("1,2\n3,4\n", 2),               # all numbers: data
    (",0,1\n0,0.5,1\n1,2,3\n", 2),   # pandas' index column: an empty name above numbers
    ("x,1\n2,3\n", 1),               # one name above numbers is enough
])
def test_csv_header_is_detected_only_from_the_columns(tmp_path, text, n_rows):
    assert datasets.load_features(write(tmp_path / "f.csv", text)).shape[0] == n_rows


def test_csv_ambiguous_header_is_an_error_asking_which(tmp_path):
    # "label" above class names, numbers above numbers: a header, or a class called "label"?
    path = write(tmp_path / "amb.csv", "label,1,2\ncat,1,2\ndog,3,4\n")
    with pytest.raises(ValueError, match=r"amb\.csv: cannot tell whether the first row is a "
                                         r"header.*--header or --no-header"):
        datasets.load_file(path)
    X, y = datasets.load_file(path, header=True)
    assert y.tolist() == ["cat", "dog"] and X.shape == (2, 2)
    X, y = datasets.load_file(path, header=False)
    assert y.tolist() == ["label", "cat", "dog"] and X.shape == (3, 2)
    with pytest.raises(ValueError, match="header is only used with .csv"):
        datasets.load_file(tmp_path / "x.npz", header=True)


def test_csv_hash_is_data_not_a_comment(tmp_path):
    path = write(tmp_path / "hash.csv", "#1,0.5\n#2,0.25\n#1,1\n")
    _, y = datasets.load_file(path)
    assert y.tolist() == ["#1", "#2", "#1"]


def test_csv_only_a_header_has_no_samples(tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        datasets.load_file(write(tmp_path / "h.csv", "label,a\n"))


@pytest.mark.parametrize("labels, message", [
    (["99999999999999999999", "1"], "does not fit a 64-bit integer"),
    (["-9223372036854775809", "1"], "does not fit a 64-bit integer"),
    (["1e19", "1"], "does not fit a 64-bit integer"),
    (["nan", "1"], "NaN or infinite"),
    (["inf", "1"], "NaN or infinite"),
    (["", "1"], "empty label"),
    (["0.5", "1"], "non-integer"),
])
def test_csv_labels_that_are_not_classes_are_refused(tmp_path, labels, message):
    path = write(tmp_path / "y.csv", "".join(f"{label},1.0\n" for label in labels))
    with pytest.raises(ValueError, match=message):
        datasets.load_file(path, header=False)


def test_csv_labels_at_the_int64_limits_and_in_text_are_kept(tmp_path):
    path = write(tmp_path / "y.csv",
                 "9223372036854775807,1\n-9223372036854775808,2\n 3.0 ,3\n")
    _, y = datasets.load_file(path)
    assert y.dtype == np.int64
    assert y.tolist() == [2**63 - 1, -(2**63), 3]
    _, names = datasets.load_file(write(tmp_path / "n.csv", " cat ,1\ndog,2\ncat,3\n"))
    assert names.tolist() == ["cat", "dog", "cat"]  # surrounding spaces are not the class


def test_array_labels_beyond_int64_are_refused_not_wrapped(tmp_path):
    np.savez(tmp_path / "u.npz", X=np.zeros((2, 2)), y=np.array([2**63, 1], dtype=np.uint64))
    np.savez(tmp_path / "f.npz", X=np.zeros((2, 2)), y=np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="does not fit a 64-bit integer"):
        datasets.load_file(tmp_path / "u.npz")
    with pytest.raises(ValueError, match="NaN"):
        datasets.load_file(tmp_path / "f.npz")


def test_cli_trains_on_headerless_string_labels_and_asks_when_unsure(tmp_path):
    rows = two_class_rows()
    plain = write(tmp_path / "plain.csv", "\n".join(rows) + "\n")
    result = run("train", "-d", plain, "-e", "2", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["n_train"] + data["n_validation"] + data["n_test"] == len(rows)  # none lost

    unsure = write(tmp_path / "unsure.csv", "\n".join(["label,1,2", *rows]) + "\n")
    assert_one_line_error(run("train", "-d", unsure, "-e", "1"), 1, "unsure.csv",
                          "--header or --no-header")
    data = json.loads(run("train", "-d", unsure, "-e", "1", "--header", "--json").stdout)
    assert data["n_train"] + data["n_validation"] + data["n_test"] == len(rows)


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    """A 784-feature model of the bundled sample, and its test images."""
    X, y, X_test, _ = datasets.load_dataset("fashion-mnist-sample")
    path = tmp_path_factory.mktemp("model") / "model.npz"
    SoftmaxRegression(max_iter=1, input_scale=1 / 255, random_state=0).fit(X, y).save(path)
    return path, X_test[:5]


def test_predict_keeps_the_first_row_of_a_csv(tmp_path, pixel_model):
    model, X = pixel_model
    expected = SoftmaxRegression.load(model).predict(X)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(",".join(map(str, r)) for r in X).encode())
    out = run("predict", model, bom)
    assert out.exit_code == 0, out.stderr
    assert out.stdout.split() == [str(v) for v in expected]  # five rows in, five labels out
    named = write(tmp_path / "named.csv", "\n".join(
        [",".join(f"p{i}" for i in range(784))] + [",".join(map(str, r)) for r in X]) + "\n")
    assert run("predict", model, named).stdout.split() == [str(v) for v in expected]
    assert_one_line_error(run("predict", model, named, "--no-header"), 1, "named.csv")
    assert len(run("predict", model, bom, "--header").stdout.split()) == 4  # as asked


# ============================================================================================
# 2. Images
# ============================================================================================
def png_header_only(path, width, height):
    """A PNG whose header says ``width`` x ``height`` with almost no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def test_16_bit_images_are_scaled_not_clipped(tmp_path, pixel_model):
    from PIL import Image

    eight = np.array([[0, 1, 2, 128, 254, 255]], dtype=np.uint8)
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), eight)
    # A model sees a 16-bit copy of an image as it sees the 8-bit image.
    model, X = pixel_model
    Image.fromarray(X[0].reshape(28, 28)).save(tmp_path / "a8.png")
    Image.fromarray(X[0].reshape(28, 28).astype(np.uint16) * 257).save(tmp_path / "a16.png")
    assert run("predict", model, tmp_path / "a16.png").stdout == \
        run("predict", model, tmp_path / "a8.png").stdout


@pytest.mark.parametrize("name", ["anim.gif", "pages.tif"])
def test_multi_frame_images_are_refused(tmp_path, pixel_model, name):
    from PIL import Image

    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (0, 200)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="2 frames"):
        read_image(tmp_path / name)
    assert_one_line_error(run("predict", pixel_model[0], tmp_path / name), 1, name, "frames")


def test_decompression_bomb_image_fails_fast_in_one_line(tmp_path, pixel_model, monkeypatch):
    bomb = png_header_only(tmp_path / "bomb.png", 15000, 15000)
    started = time.perf_counter()
    result = run("predict", pixel_model[0], bomb)
    assert time.perf_counter() - started < 5
    assert_one_line_error(result, 1, "bomb.png", "15000x15000", "225,000,000 pixels",
                          "SOFTMAX_FAST_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("SOFTMAX_FAST_MAX_IMAGE_PIXELS", "100")  # a lower limit applies too
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(InputError, match="784 pixels, more than the limit of 100"):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv("SOFTMAX_FAST_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="SOFTMAX_FAST_MAX_IMAGE_PIXELS='lots'"):
        read_image(tmp_path / "small.png")


def test_images_without_an_8_bit_scale_and_broken_images_are_one_line(tmp_path, pixel_model):
    from PIL import Image

    Image.fromarray(np.full((28, 28), 70000, np.int32)).save(tmp_path / "i32.tif")
    Image.fromarray(np.full((28, 28), 0.5, np.float32)).save(tmp_path / "f32.tif")
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.png")  # noise: the cut removes pixel data
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:400])
    (tmp_path / "text.png").write_text("not an image")
    for name, word in [("i32.tif", "32-bit integer"), ("f32.tif", "floating-point"),
                       ("cut.png", "cannot read the image"), ("text.png", "cannot read")]:
        assert_one_line_error(run("predict", pixel_model[0], tmp_path / name), 1, name, word)


# ============================================================================================
# 3. Size limits
# ============================================================================================
def idx_header(shape, type_code=0x08):
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, type_code, len(shape), *shape)


def test_idx_default_limit_is_4_gib_and_says_how_to_raise_it(tmp_path, monkeypatch):
    assert datasets.MAX_IDX_BYTES == 4 * 2**30
    liar = tmp_path / "liar-idx3-ubyte"
    liar.write_bytes(idx_header((5, 2**30)) + bytes(16))  # claims 5 GiB
    started = time.perf_counter()
    with pytest.raises(SizeLimitError, match=r"liar-idx3-ubyte.*5\.0 GiB.*limit of 4294967296 "
                                             r"bytes.*SOFTMAX_FAST_MAX_BYTES=6G"):
        datasets.read_idx(liar)
    assert time.perf_counter() - started < 1
    small = tmp_path / "small.idx"
    small.write_bytes(idx_header((2000,)) + bytes(2000))
    monkeypatch.setenv("SOFTMAX_FAST_MAX_BYTES", "1K")
    with pytest.raises(SizeLimitError, match="limit of 1024 bytes"):
        datasets.read_idx(small)
    assert datasets.read_idx(small, max_bytes=4096).shape == (2000,)  # the argument wins
    monkeypatch.setenv("SOFTMAX_FAST_MAX_BYTES", "a lot")
    with pytest.raises(ValueError, match="SOFTMAX_FAST_MAX_BYTES='a lot' is not a size"):
        datasets.read_idx(small)


def test_npz_zip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch, pixel_model):
    bomb = tmp_path / "bomb.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(4 * 2**20, np.uint8))  # 4 MiB of zeros: a few KiB compressed
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", buffer.getvalue())
        archive.writestr("y.npy", buffer.getvalue())
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv("SOFTMAX_FAST_MAX_BYTES", "1M")
    with pytest.raises(SizeLimitError, match=r"bomb\.npz: array X declares: 4194432 bytes.*"
                                             r"limit of 1048576 bytes.*SOFTMAX_FAST_MAX_BYTES"):
        datasets.load_file(bomb)
    assert_one_line_error(run("train", "-d", bomb), 1, "bomb.npz", "SOFTMAX_FAST_MAX_BYTES")
    assert_one_line_error(run("predict", pixel_model[0], bomb), 1, "bomb.npz", "limit")


def npy_bytes(header_shape, dtype="<f8", payload=b"\x00" * 16):
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {header_shape}, }}"
    header = header.encode() + b" " * (118 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def test_npy_headers_claiming_more_than_the_file_are_refused_without_allocating(tmp_path):
    (tmp_path / "huge.npy").write_bytes(npy_bytes("(100000000000,)"))  # 745 GiB
    (tmp_path / "liar.npy").write_bytes(npy_bytes("(100000000,)"))     # 800 MB, under limit
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("X.npy", npy_bytes("(100000000000,)"))
    with pytest.raises(SizeLimitError, match=r"huge\.npy.*745\.1 GiB"):
        datasets.load_features(tmp_path / "huge.npy")
    with pytest.raises(ValueError, match=r"liar\.npy.*truncated.*holds 16"):
        datasets.load_features(tmp_path / "liar.npy")
    with pytest.raises(SizeLimitError, match=r"huge\.npz: cannot load array X"):
        datasets.load_features(tmp_path / "huge.npz")


def test_csv_files_above_the_limit_are_refused(tmp_path, monkeypatch):
    path = write(tmp_path / "big.csv", "1,2\n" * 100)
    monkeypatch.setenv("SOFTMAX_FAST_MAX_BYTES", "100")
    with pytest.raises(SizeLimitError, match=r"big\.csv: CSV file: 400 bytes.*limit of 100"):
        datasets.load_file(path)


def corrupt_files(directory):
    """Files named like data files that are anything but (name -> bytes)."""
    buffer = io.BytesIO()
    np.savez(buffer, X=np.arange(12.0).reshape(4, 3), y=np.array([0, 1, 0, 1]))
    good = buffer.getvalue()
    flipped = bytearray(good)
    flipped[120] ^= 0xFF
    return {
        "truncated.npz": good[: len(good) // 2], "flipped.npz": bytes(flipped),
        "random.npz": bytes(range(256)) * 2, "empty.npz": b"", "empty.npy": b"",
        "badheader.npy": b"\x93NUMPY\x01\x00" + struct.pack("<H", 10) + b"{'descr':\n",
        "latin1.csv": "label,x\n1,caf\xe9\n".encode("latin-1"), "empty.csv": b"",
        "utf16.csv": "label,x\n1,2\n".encode("utf-16"),
        "bigfield.csv": b"label,x\n1," + b"9" * 200_000 + b"\n",
    }


@pytest.mark.parametrize("name", sorted(corrupt_files(None)))
def test_corrupt_files_are_one_clear_error(tmp_path, name, pixel_model):
    path = tmp_path / name
    path.write_bytes(corrupt_files(tmp_path)[name])
    if name.endswith(".npy"):
        np.save(tmp_path / f"{path.stem}.labels.npy", np.zeros(2))
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        datasets.load_file(path)
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        read_inputs([path], 3)
    assert_one_line_error(run("train", "-d", path, "-e", "1"), 1, name)
    assert_one_line_error(run("predict", pixel_model[0], path), 1, name)


# ============================================================================================
# 4. Model files
# ============================================================================================
def tampered_copy(model, path, edit, *, fix_checksum):
    """Save a copy of ``model`` with ``edit(meta)`` applied to its JSON metadata."""
    arrays = dict(np.load(model, allow_pickle=False))
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    if fix_checksum:  # what a forger (or a buggy tool) would do: the checksum passes
        meta.pop("sha256")
        meta["sha256"] = persistence._digest(meta, {k: v for k, v in arrays.items()
                                                    if k != "meta"})
    np.savez(path, **dict(arrays, meta=np.array(json.dumps(meta))))
    return path


def flip_input_scale(meta):
    meta["params"]["input_scale"] = -meta["params"]["input_scale"]


@pytest.mark.parametrize("edit, fix, words", [
    (flip_input_scale, False, ["checksum mismatch"]),
    (flip_input_scale, True, ["invalid model", "input_scale"]),
    (lambda m: m.update(n_iter="x"), True, ["invalid model", "n_iter"]),
    (lambda m: m.update(params=[1]), True, ["params must be a JSON object"]),
    (lambda m: m.update(user=5), True, ["user metadata"]),
    (lambda m: m.pop("n_features_in"), True, ["n_features_in"]),
    (lambda m: m["params"].update(backend={"a": 1}), True, ["backend"]),
    (lambda m: m["params"].update(nosuch=1), True, ["unknown parameters"]),
    (lambda m: m.update(format_version="2"), True, ["format version"]),
    (lambda m: m.update(loss_curve=["x"]), True, ["loss_curve"]),
], ids=["sign", "sign-rechecksummed", "n_iter", "params", "user", "n_features", "backend",
        "unknown-param", "version", "loss_curve"])
def test_tampered_model_metadata_is_one_line_not_a_wrong_answer(tmp_path, pixel_model, edit,
                                                                  fix, words):
    model, X = pixel_model
    bad = tampered_copy(model, tmp_path / "bad.npz", edit, fix_checksum=fix)
    np.save(tmp_path / "x.npy", X)
    assert_one_line_error(run("evaluate", bad), 1, "bad.npz", *words)
    assert_one_line_error(run("predict", bad, tmp_path / "x.npy"), 1, "bad.npz", *words)


def test_model_zip_bomb_is_refused_before_the_model_reader(tmp_path, pixel_model, monkeypatch):
    model, X = pixel_model
    np.save(tmp_path / "x.npy", X)
    monkeypatch.setenv("SOFTMAX_FAST_MAX_BYTES", "1K")  # the model's coef is 31 KB
    assert_one_line_error(run("predict", model, tmp_path / "x.npy"), 1, "model.npz",
                          "SOFTMAX_FAST_MAX_BYTES")


def test_model_reader_failures_of_any_type_are_one_line(tmp_path, pixel_model, monkeypatch):
    def broken(cls, path):
        raise AttributeError("'NoneType' object has no attribute 'items'")

    monkeypatch.setattr(SoftmaxRegression, "load", classmethod(broken))
    assert_one_line_error(run("evaluate", pixel_model[0]), 1, "not a readable softmax-fast "
                          "model file", "AttributeError")


# ============================================================================================
# 5. predict --proba writes valid CSV whatever the class names
# ============================================================================================
def test_predict_csv_header_quotes_awkward_class_names(tmp_path):
    names = np.array(["a,b", 'say "hi"', "line\nbreak"])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = names[np.arange(90) % 3]
    path = tmp_path / "model.npz"
    SoftmaxRegression(max_iter=2, random_state=0).fit(X, y).save(path)
    np.save(tmp_path / "x.npy", X[:4])
    result = run("predict", path, tmp_path / "x.npy", "--proba")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == sorted(names.tolist())
    assert len(rows) == 5 and all(len(row) == 3 for row in rows)
    labels = list(csv.reader(io.StringIO(run("predict", path, tmp_path / "x.npy").stdout)))
    assert len(labels) == 4 and all(len(row) == 1 and row[0] in names for row in labels)
    assert run("predict", path, tmp_path / "x.npy", "--proba", "--out",
               tmp_path / "p.csv").exit_code == 0
    assert list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text()))) == rows
