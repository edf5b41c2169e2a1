"""Tests of softmax_fast.datasets: the IDX reader, dataset search, download and sample.

User data files (load_file, load_features) are tested in test_data_files.py.
"""

import gzip
import hashlib
import http.server
import io
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import SUBPROCESS_CWD

from softmax_fast import datasets
from softmax_fast.datasets import DatasetError, ExpectedFile, catalog, download

SYSTEM_DEBIAN_DIR = datasets.DEBIAN_DATA_DIR
TYPE_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


# --------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------


def idx_bytes(array, *, type_code=None, shape=None):
    """Encode `array` as IDX; `type_code` and `shape` override the header to make bad files."""
    array = np.asarray(array)
    if type_code is None:
        type_code = TYPE_CODES[array.dtype.type]
    if shape is None:
        shape = array.shape
    header = struct.pack(f">BBBB{len(shape)}I", 0, 0, type_code, len(shape), *shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_file(path, data, *, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def fake_fashion_files(n_train, n_test, seed=0):
    """Return {file name: uncompressed IDX bytes} for a tiny Fashion-MNIST look-alike."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_train, 28, 28), np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(np.arange(n_train, dtype=np.uint8) % 10),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_test, 28, 28), np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.arange(n_test, dtype=np.uint8) % 10),
    }


def install_fake_fashion(directory, n_train, n_test=5, *, compress=True):
    for name, data in fake_fashion_files(n_train, n_test).items():
        write_file(directory / (f"{name}.gz" if compress else name), data, compress=compress)
    return directory


def files_under(directory):
    return sorted(path for path in Path(directory).rglob("*") if path.is_file())


@pytest.fixture(autouse=True)
def isolated_locations(tmp_path, monkeypatch):
    """Point every search location at empty temporary directories."""
    monkeypatch.delenv(datasets.DATA_DIR_ENV_VAR, raising=False)
    monkeypatch.delenv(datasets.MIRROR_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(catalog, "DEBIAN_DATA_DIR", tmp_path / "debian")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network must not be used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mirror = self.server.mirror
        mirror.requests.append(self.path)
        if self.path in mirror.stalled:
            time.sleep(mirror.stall_seconds)
        body = mirror.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in mirror.dropped:
            # Promise the whole body, send half, then hang up.
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # keep the test output clean


class Mirror:
    """A local HTTP server standing in for the Fashion-MNIST download site."""

    def __init__(self):
        self.routes = {}
        self.dropped = set()
        self.stalled = set()
        self.stall_seconds = 1.0
        self.requests = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MirrorHandler)
        self.server.mirror = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        # A short poll interval makes shutdown() quick.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(monkeypatch):
    """Serve tiny gzipped fake Fashion-MNIST files and expect their checksums."""
    server = Mirror()
    expected = {}
    for name, data in fake_fashion_files(n_train=20, n_test=10).items():
        server.routes[f"/{name}.gz"] = gzip.compress(data)
        expected[name] = ExpectedFile(hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setattr(catalog, "FASHION_MNIST_FILES", expected)
    monkeypatch.setenv(datasets.MIRROR_ENV_VAR, server.url)
    yield server
    server.close()


# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(TYPE_CODES))
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trips_every_element_type(tmp_path, dtype, compress):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_file(tmp_path / "data.idx", idx_bytes(array), compress=compress)

    result = datasets.read_idx(path)

    assert result.shape == (2, 3, 4)
    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    gzipped = write_file(tmp_path / "labels.idx", idx_bytes(array), compress=True)
    plain = write_file(tmp_path / "labels.gz", idx_bytes(array))

    np.testing.assert_array_equal(datasets.read_idx(gzipped), array)
    np.testing.assert_array_equal(datasets.read_idx(plain), array)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_accepts_file_objects(compress):
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    data = idx_bytes(array)
    stream = io.BytesIO(gzip.compress(data) if compress else data)

    np.testing.assert_array_equal(datasets.read_idx(stream), array)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_rejects_truncated_payload(tmp_path, compress):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-100]
    path = write_file(tmp_path / "short.idx", data, compress=compress)

    with pytest.raises(ValueError, match=r"short\.idx.*truncated"):
        datasets.read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("shape", [(10**6, 10**6), (10**4, 10**4, 10)], ids=["1e12", "1e9"])
def test_read_idx_fails_fast_on_a_header_claiming_too_much(tmp_path, compress, shape):
    # 10**12 elements is beyond the size limit; 10**9 is within it but not in the file.
    data = idx_bytes(np.zeros(16, np.uint8), shape=shape)
    path = write_file(tmp_path / "liar.idx", data, compress=compress)

    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"liar\.idx.*claims shape"):
        datasets.read_idx(path)
    assert time.perf_counter() - started < 1.0


def test_read_idx_size_limit_is_adjustable(tmp_path):
    path = write_file(tmp_path / "big.idx", idx_bytes(np.zeros(1000, np.uint8)))

    with pytest.raises(ValueError, match="limit of 999 bytes"):
        datasets.read_idx(path, max_bytes=999)


def test_read_idx_rejects_a_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])

    with pytest.raises(ValueError, match=r"cut\.idx\.gz"):
        datasets.read_idx(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x00", "magic number"),
        (b"\x00\x00\x0a\x01\x00\x00\x00\x00", "type code 0x0A"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00", "only 2 bytes"),
        (b"", "only 0 bytes"),
    ],
    ids=["bad-magic", "bad-type-code", "zero-dims", "short-header", "tiny", "empty"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_rejects_malformed_headers(tmp_path, data, message, compress):
    path = write_file(tmp_path / "bad.idx", data, compress=compress)

    with pytest.raises(ValueError, match=message):
        datasets.read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_rejects_trailing_data(tmp_path, compress):
    data = idx_bytes(np.arange(10, dtype=np.uint8)) + b"garbage"
    path = write_file(tmp_path / "long.idx", data, compress=compress)

    with pytest.raises(ValueError, match=r"long\.idx.*trailing data"):
        datasets.read_idx(path)


# --------------------------------------------------------------------------------------------
# Finding and loading Fashion-MNIST
# --------------------------------------------------------------------------------------------


def test_search_order_is_env_then_cache_then_debian(tmp_path, monkeypatch):
    env_dir = install_fake_fashion(tmp_path / "env", n_train=11)
    cache = install_fake_fashion(datasets.cache_dir() / "fashion-mnist", n_train=12)
    debian = install_fake_fashion(catalog.DEBIAN_DATA_DIR, n_train=13)
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(env_dir))

    assert datasets.find_dataset("fashion-mnist") == (env_dir, "env")
    assert len(datasets.load_dataset("fashion-mnist", download=False)[0]) == 11

    monkeypatch.delenv(datasets.DATA_DIR_ENV_VAR)
    assert datasets.find_dataset("fashion-mnist") == (cache, "cache")
    assert len(datasets.load_dataset("fashion-mnist", download=False)[0]) == 12

    (cache / "t10k-labels-idx1-ubyte.gz").unlink()  # an incomplete directory does not count
    assert datasets.find_dataset("fashion-mnist") == (debian, "debian")
    assert len(datasets.load_dataset("fashion-mnist", download=False)[0]) == 13


def test_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
    assert datasets.cache_dir() == tmp_path / "xdg-cache" / "softmax-fast"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec
    assert datasets.cache_dir() == Path.home() / ".cache" / "softmax-fast"


def test_data_home_replaces_the_cache(tmp_path):
    data_home = tmp_path / "elsewhere"
    install_fake_fashion(data_home / "fashion-mnist", n_train=7)

    assert datasets.find_dataset("fashion-mnist") is None
    assert datasets.find_dataset("fashion-mnist", data_home=data_home) == (
        data_home / "fashion-mnist",
        "cache",
    )
    assert len(datasets.load_dataset("fashion-mnist", data_home=data_home)[0]) == 7


def test_search_paths_can_be_replaced(tmp_path, monkeypatch):
    custom = install_fake_fashion(tmp_path / "custom", n_train=4)
    monkeypatch.setattr(catalog, "search_paths", lambda data_home=None: [(custom, "env")])

    assert datasets.find_dataset("fashion-mnist") == (custom, "env")


def test_load_dataset_returns_flat_uint8_images_and_int64_labels(tmp_path, monkeypatch):
    directory = install_fake_fashion(tmp_path / "plain", n_train=15, n_test=6, compress=False)
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(directory))

    X_train, y_train, X_test, y_test = datasets.load_dataset("fashion-mnist", download=False)

    assert X_train.shape == (15, 784) and X_test.shape == (6, 784)
    assert X_train.dtype == X_test.dtype == np.uint8
    assert X_train.flags.c_contiguous and X_test.flags.c_contiguous
    assert y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(y_train, np.arange(15) % 10)


def test_load_dataset_rejects_mismatched_image_and_label_counts(tmp_path, monkeypatch):
    directory = install_fake_fashion(tmp_path / "data", n_train=10)
    write_file(
        directory / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(9, np.uint8)), compress=True
    )
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(directory))

    with pytest.raises(ValueError, match="10 images .* 9 labels"):
        datasets.load_dataset("fashion-mnist", download=False)


def test_missing_dataset_without_download_says_where_it_looked(tmp_path, no_network):
    with pytest.raises(DatasetError) as caught:
        datasets.load_dataset("fashion-mnist", download=False)

    message = str(caught.value)
    assert "SOFTMAX_FAST_DATA" in message
    assert str(datasets.cache_dir() / "fashion-mnist") in message
    assert str(catalog.DEBIAN_DATA_DIR) in message
    assert "apt install dataset-fashion-mnist" in message


@pytest.mark.parametrize(
    "function",
    [
        datasets.load_dataset,
        datasets.find_dataset,
        datasets.download_dataset,
        datasets.dataset_info,
        datasets.verify_dataset,
    ],
)
def test_unknown_dataset_names_are_rejected(function):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*fashion-mnist, fashion-mnist-"):
        function("mnist")


def test_list_datasets_reports_location_source_and_size(tmp_path, monkeypatch):
    directory = install_fake_fashion(tmp_path / "env", n_train=3)
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(directory))

    full, sample = datasets.list_datasets()

    assert (full.name, full.available, full.location, full.source) == (
        "fashion-mnist",
        True,
        directory,
        "env",
    )
    assert full.size_bytes == sum(path.stat().st_size for path in files_under(directory))
    assert (sample.name, sample.available, sample.source) == (
        "fashion-mnist-sample",
        True,
        "bundled",
    )
    assert sample.size_bytes == sample.location.stat().st_size > 0


def test_dataset_info_of_a_missing_dataset():
    info = datasets.dataset_info("fashion-mnist")

    assert not info.available
    assert info.location is info.source is info.size_bytes is None


def test_verify_dataset_checks_checksums(tmp_path, monkeypatch):
    directory = install_fake_fashion(tmp_path / "env", n_train=3)
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(directory))
    expected = {
        name: ExpectedFile(hashlib.sha256(data).hexdigest(), len(data))
        for name, data in fake_fashion_files(n_train=3, n_test=5).items()
    }
    monkeypatch.setattr(catalog, "FASHION_MNIST_FILES", expected)

    assert datasets.verify_dataset("fashion-mnist") == (directory, "env")

    expected["t10k-images-idx3-ubyte"] = ExpectedFile("0" * 64, 3936)
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz does not match"):
        datasets.verify_dataset("fashion-mnist")
    with pytest.raises(ValueError, match="no published checksums"):
        datasets.verify_dataset("fashion-mnist-sample")


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def test_download_fetches_verifies_and_caches(mirror):
    reports = []
    X_train, y_train, X_test, y_test = datasets.load_dataset(
        "fashion-mnist", progress=lambda done, total, name: reports.append((done, total, name))
    )

    assert X_train.shape == (20, 784) and X_test.shape == (10, 784)
    assert y_train.dtype == np.int64
    cache = datasets.cache_dir() / "fashion-mnist"
    assert [path.name for path in files_under(datasets.cache_dir())] == sorted(
        f"{name}.gz" for name in datasets.FASHION_MNIST_FILES
    )
    # Each file reports its start (0 bytes) and ends with all of its bytes.
    for name in datasets.FASHION_MNIST_FILES:
        mine = [(done, total) for done, total, file in reports if file == f"{name}.gz"]
        size = len(mirror.routes[f"/{name}.gz"])
        assert mine[0] == (0, size) and mine[-1] == (size, size)

    # Now cached: found there, and nothing is fetched again.
    requests = len(mirror.requests)
    assert datasets.find_dataset("fashion-mnist") == (cache, "cache")
    assert datasets.download_dataset("fashion-mnist") == cache
    assert len(mirror.requests) == requests


def test_download_skips_a_dataset_found_elsewhere_unless_forced(mirror):
    install_fake_fashion(catalog.DEBIAN_DATA_DIR, n_train=20, n_test=10)

    assert datasets.download_dataset("fashion-mnist") == catalog.DEBIAN_DATA_DIR
    assert mirror.requests == []

    cache = datasets.download_dataset("fashion-mnist", force=True)
    assert cache == datasets.cache_dir() / "fashion-mnist"
    assert len(mirror.requests) == 4
    assert datasets.find_dataset("fashion-mnist") == (cache, "cache")


def test_download_fetches_only_the_files_missing_from_the_cache(mirror):
    cache = datasets.cache_dir() / "fashion-mnist"
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(mirror.routes["/train-images-idx3-ubyte.gz"])

    datasets.download_dataset("fashion-mnist")

    assert "/train-images-idx3-ubyte.gz" not in mirror.requests
    assert len(mirror.requests) == 3


def test_download_of_the_bundled_sample_needs_no_network(no_network):
    path = datasets.download_dataset("fashion-mnist-sample")

    assert path.name == "fashion-mnist-sample.npz" and path.is_file()


def assert_failed_download_left_nothing(match):
    with pytest.raises(DatasetError, match=match) as caught:
        datasets.load_dataset("fashion-mnist")
    assert files_under(datasets.cache_dir()) == []
    assert not list((datasets.cache_dir() / "fashion-mnist").glob(".download-*"))
    return str(caught.value)


def test_checksum_mismatch_leaves_nothing_behind(mirror):
    # The last file is bad, so the three good ones before it must not be kept either.
    mirror.routes["/t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"\x00\x00\x08\x01" + bytes(4))

    message = assert_failed_download_left_nothing("does not match the expected content")
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "SOFTMAX_FAST_DATA" in message


def test_connection_dropped_midway_leaves_nothing_behind(mirror):
    mirror.dropped.add("/train-labels-idx1-ubyte.gz")

    assert_failed_download_left_nothing("cut off after")


def test_corrupt_gzip_leaves_nothing_behind(mirror):
    compressed = mirror.routes["/t10k-images-idx3-ubyte.gz"]
    mirror.routes["/t10k-images-idx3-ubyte.gz"] = compressed[: len(compressed) // 2]

    assert_failed_download_left_nothing("not valid gzip data")


def test_http_error_leaves_nothing_behind(mirror):
    del mirror.routes["/t10k-images-idx3-ubyte.gz"]

    message = assert_failed_download_left_nothing("Could not download.*404")
    assert "apt install dataset-fashion-mnist" in message


def test_unresponsive_server_times_out(mirror, monkeypatch):
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT", 0.2)
    mirror.stalled.add("/train-images-idx3-ubyte.gz")

    assert_failed_download_left_nothing("timed out")


# --------------------------------------------------------------------------------------------
# The bundled sample and the real dataset
# --------------------------------------------------------------------------------------------


def test_bundled_sample_loads_offline_with_balanced_classes(no_network):
    X_train, y_train, X_test, y_test = datasets.load_dataset("fashion-mnist-sample")

    assert X_train.shape == (6000, 784) and X_test.shape == (1000, 784)
    assert X_train.dtype == X_test.dtype == np.uint8
    assert X_train.flags.c_contiguous and X_test.flags.c_contiguous
    assert y_train.dtype == y_test.dtype == np.int64
    assert np.bincount(y_train, minlength=10).tolist() == [600] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10
    assert X_train.max() > 200  # raw pixel values, not scaled


@pytest.mark.fashion
def test_full_fashion_mnist_from_the_debian_package(monkeypatch):
    if not all(
        (SYSTEM_DEBIAN_DIR / f"{name}.gz").is_file() for name in datasets.FASHION_MNIST_FILES
    ):
        reason = (f"Fashion-MNIST not installed in {SYSTEM_DEBIAN_DIR} "
                  "(apt install dataset-fashion-mnist)")
        if os.environ.get("CI"):
            pytest.fail(reason)  # .ci/run installs it: missing there is a broken CI
        pytest.skip(reason)
    monkeypatch.setattr(catalog, "DEBIAN_DATA_DIR", SYSTEM_DEBIAN_DIR)

    X_train, y_train, X_test, y_test = datasets.load_dataset("fashion-mnist", download=False)

    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert set(np.unique(y_train)) == set(np.unique(y_test)) == set(range(10))
    assert datasets.verify_dataset("fashion-mnist") == (SYSTEM_DEBIAN_DIR, "debian")


def test_the_catalog_imports_no_numpy():
    code = ("import sys, softmax_fast.datasets as d; d.DATASETS; d.list_datasets(); "
            "print('numpy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=SUBPROCESS_CWD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
