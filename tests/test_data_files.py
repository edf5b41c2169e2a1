"""Tests of softmax_fast.datasets.files: a user's data files, with labels and without."""

import numpy as np
import pytest
import scipy.sparse

from softmax_fast import datasets

# --------------------------------------------------------------------------------------------
# load_file
# --------------------------------------------------------------------------------------------


def test_load_file_npz(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=np.array([0, 1, 1, 2], dtype=np.uint8))

    X_loaded, y = datasets.load_file(path)

    np.testing.assert_array_equal(X_loaded, X)
    assert X_loaded.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 1, 2]


def test_load_file_npz_missing_array(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 2)), labels=np.zeros(2))

    with pytest.raises(ValueError, match="missing array.* y.*holds X, labels"):
        datasets.load_file(path)


def test_load_file_refuses_pickled_object_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, X=np.zeros((2, 2)), y=np.array([{"a": 1}, None], dtype=object))

    with pytest.raises(ValueError, match=r"evil\.npz.*allow_pickle"):
        datasets.load_file(path)


def test_load_file_rejects_mismatched_lengths(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((3, 2)), y=np.zeros(2, dtype=int))

    with pytest.raises(ValueError, match="3 samples but 2 labels"):
        datasets.load_file(path)


def test_load_file_rejects_non_integer_labels(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 2)), y=np.array([0.5, 1.0]))

    with pytest.raises(ValueError, match="non-integer"):
        datasets.load_file(path)


def test_load_file_npy_pair_by_convention_or_explicit_labels(tmp_path):
    X = np.arange(6, dtype=np.float64).reshape(3, 2)
    np.save(tmp_path / "train.npy", X)
    np.save(tmp_path / "train.labels.npy", np.array([2.0, 0.0, 1.0]))
    np.save(tmp_path / "other_labels.npy", np.array([5, 6, 7]))

    X_loaded, y = datasets.load_file(tmp_path / "train.npy")
    np.testing.assert_array_equal(X_loaded, X)
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]

    _, y = datasets.load_file(tmp_path / "train.npy", labels_path=tmp_path / "other_labels.npy")
    assert y.tolist() == [5, 6, 7]


def test_load_file_npy_without_labels(tmp_path):
    np.save(tmp_path / "lonely.npy", np.zeros((2, 2)))

    with pytest.raises(ValueError, match=r"lonely\.labels\.npy"):
        datasets.load_file(tmp_path / "lonely.npy")


def test_load_file_csv_with_header_finds_the_label_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,label,b\n1.5,3,2\n0,1,-1\n")

    X, y = datasets.load_file(path)

    np.testing.assert_array_equal(X, [[1.5, 2.0], [0.0, -1.0]])
    assert y.dtype == np.int64 and y.tolist() == [3, 1]


def test_load_file_csv_without_header_uses_the_first_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("7,0.1,0.2\n8,0.3,0.4\n9,0.5,0.6\n")

    X, y = datasets.load_file(path)

    assert X.shape == (3, 2) and X.dtype == np.float64
    assert y.tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="non-integer"):
        datasets.load_file(path, label_column=-1)  # 0.2, 0.4, 0.6 are not class labels


def test_load_file_csv_label_column_by_name_index_and_string_labels(tmp_path):
    path = tmp_path / "animals.csv"
    path.write_text("w,h,kind\n1,2,cat\n3,4,dog\n")

    X, y = datasets.load_file(path, label_column="kind")
    assert X.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert y.tolist() == ["cat", "dog"]

    _, y = datasets.load_file(path, label_column=2)
    assert y.tolist() == ["cat", "dog"]

    with pytest.raises(ValueError, match="no column named 'species'"):
        datasets.load_file(path, label_column="species")
    with pytest.raises(ValueError, match="out of range"):
        datasets.load_file(path, label_column=3)


def test_load_file_csv_rejects_non_numeric_features(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("label,x\n1,abc\n")

    with pytest.raises(ValueError, match=r"data\.csv: cannot parse CSV"):
        datasets.load_file(path)


def test_load_file_svmlight_gives_csr(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    X = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 3.0]])
    path = tmp_path / "data.svm"
    dump_svmlight_file(X, np.array([1, 0]), str(path))

    X_loaded, y = datasets.load_file(path)

    assert scipy.sparse.issparse(X_loaded) and X_loaded.format == "csr"
    np.testing.assert_array_equal(X_loaded.toarray(), X)
    assert y.dtype == np.int64 and y.tolist() == [1, 0]


def test_load_file_rejects_unknown_extensions_and_misplaced_options(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data file extension '\.parquet'.*\.npz"):
        datasets.load_file(tmp_path / "data.parquet")
    with pytest.raises(ValueError, match="labels_path is only used with .npy"):
        datasets.load_file(tmp_path / "data.csv", labels_path=tmp_path / "y.npy")
    with pytest.raises(ValueError, match="label_column is only used with .csv"):
        datasets.load_file(tmp_path / "data.npz", label_column="label")


# --------------------------------------------------------------------------------------------
# load_features: the same readers, features only (softmax-fast predict)
# --------------------------------------------------------------------------------------------


def test_load_features_csv_drops_a_label_column_and_keeps_headerless_columns(tmp_path):
    with_header = tmp_path / "with_header.csv"
    with_header.write_text('a,"label",b\n1.5,3,2\n0,1,-1\n')
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("7,0.1,0.2\n8,0.3,0.4\n")

    np.testing.assert_array_equal(datasets.load_features(with_header), [[1.5, 2.0], [0.0, -1.0]])
    X = datasets.load_features(headerless)
    assert X.dtype == np.float64 and X.tolist() == [[7, 0.1, 0.2], [8, 0.3, 0.4]]
    # load_file reads the same files with the same header rule, plus the labels.
    X_labelled, y = datasets.load_file(with_header)
    np.testing.assert_array_equal(X_labelled, datasets.load_features(with_header))
    assert y.tolist() == [3, 1]


def test_load_features_npz_takes_X_or_the_only_array(tmp_path):
    X = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.savez(tmp_path / "xy.npz", X=X, y=np.array([0, 1]))
    np.savez(tmp_path / "only.npz", images=X)
    np.savez(tmp_path / "two.npz", a=X, b=X)

    np.testing.assert_array_equal(datasets.load_features(tmp_path / "xy.npz"), X)
    assert datasets.load_features(tmp_path / "only.npz").dtype == np.uint8
    with pytest.raises(ValueError, match=r"two\.npz: holds arrays a, b; expected one named X"):
        datasets.load_features(tmp_path / "two.npz")


def test_load_features_refuses_pickles_and_unknown_extensions(tmp_path):
    np.savez(tmp_path / "evil.npz", X=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=r"evil\.npz: cannot load array X.*allow_pickle"):
        datasets.load_features(tmp_path / "evil.npz")
    with pytest.raises(ValueError, match=r"unknown features file extension '\.svm'"):
        datasets.load_features(tmp_path / "data.svm")
