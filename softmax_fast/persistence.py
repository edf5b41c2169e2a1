"""Model files: ``.npz`` arrays plus JSON metadata, no pickle, every byte under one checksum.

Layout (format version 2): arrays ``coef`` (c, d), ``intercept`` (c,), ``classes`` (c,),
optionally ``feature_names_in`` (d,), and ``meta``: a JSON object with the estimator's
parameters, ``n_features_in``, ``n_iter``, ``loss_curve``, free-form ``user`` metadata (the
CLI records the training data there) and ``sha256``, a digest of the canonical JSON of every
other metadata field *and* of every array (name, dtype, shape, bytes). Editing any of them —
a sign flipped in ``input_scale``, a coefficient — makes the file unreadable rather than
silently wrong.

Reading never unpickles (``allow_pickle=False``), checks the digest, then the type and value
of every field: ``classes`` 1-D and unique, coefficients finite and of the declared shape,
parameters valid for the estimator. Any failure is a :class:`ModelFileError` naming the file
and the problem. Files of format version 1 (metadata outside the checksum) are still read,
with the same checks on every field.
"""

import hashlib
import json
import os
import zipfile

import numpy as np

from softmax_fast._io import atomic_output

__all__ = ["ModelFileError", "save_model", "load_model", "MODEL_FORMAT_VERSION"]

#: Version written by :func:`save_model`; :func:`load_model` reads this one and version 1.
MODEL_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_FORMAT = "softmax-fast-model"
_ARRAYS = ("coef", "intercept", "classes", "feature_names_in")


class ModelFileError(ValueError):
    """A saved model file is missing, truncated, tampered with or of another format version."""


def save_model(model, path, metadata=None):
    """Write the fitted ``model`` to ``path`` atomically (see the module docstring)."""
    classes = np.asarray(model.classes_)
    if classes.dtype == object:
        classes = classes.astype(str)
    arrays = {"coef": np.ascontiguousarray(model.coef_),
              "intercept": np.ascontiguousarray(model.intercept_), "classes": classes}
    if hasattr(model, "feature_names_in_"):
        arrays["feature_names_in"] = np.asarray(model.feature_names_in_, dtype=str)
    params = {k: v for k, v in model.get_params().items()
              if isinstance(v, (str, int, float, bool, type(None)))}
    meta = {
        "format": _FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "params": params,
        "n_features_in": int(model.n_features_in_),
        "n_iter": int(model.n_iter_),
        "alpha": float(getattr(model, "alpha_", model.get_params().get("alpha", 0.0))),
        "loss_curve": [float(v) for v in getattr(model, "loss_curve_", [])],
        "user": _json_safe(metadata or {}),
    }
    meta["sha256"] = _digest(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True, allow_nan=False))
    path = os.fspath(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_model(cls, path):
    """Read a model written by :func:`save_model` as an instance of ``cls``."""
    path = os.fspath(path)
    arrays = _read_arrays(path)
    meta = _read_meta(path, arrays.pop("meta", None))
    unknown = set(arrays) - set(_ARRAYS)
    if unknown:
        raise ModelFileError(f"{path}: unexpected arrays {sorted(unknown)}")
    missing = {"coef", "intercept", "classes"} - set(arrays)
    if missing:
        raise ModelFileError(f"{path}: missing arrays {sorted(missing)}")
    if meta["format_version"] >= 2:
        expected = _digest({k: v for k, v in meta.items() if k != "sha256"}, arrays)
    else:
        expected = _digest_v1(arrays)
    if meta.get("sha256") != expected:
        raise ModelFileError(f"{path}: checksum mismatch: the file was modified or damaged")
    try:
        return _build(cls, meta, arrays)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: invalid model: {exc}") from exc


def _read_arrays(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, MemoryError) as exc:
        raise ModelFileError(f"{path}: not a readable softmax-fast model file ({exc})") from exc


def _read_meta(path, raw):
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        raise ModelFileError(f"{path}: the model metadata is missing or corrupt")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: the model metadata is missing or corrupt") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ModelFileError(f"{path}: not a softmax-fast model file")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in _READABLE_VERSIONS:
        raise ModelFileError(
            f"{path}: model format version {version} is not supported "
            f"(this softmax-fast reads versions {', '.join(map(str, _READABLE_VERSIONS))})"
        )
    return meta


def _build(cls, meta, arrays):
    """The estimator described by ``meta`` and ``arrays``, every field checked."""
    params = meta.get("params")
    if not isinstance(params, dict):
        raise TypeError("params must be a JSON object")
    valid = cls().get_params()
    unknown = set(params) - set(valid)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    model = cls(**params)
    model._validate_params()
    coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    n_features = _count(meta.get("n_features_in"), "n_features_in", minimum=1)
    if classes.ndim != 1 or classes.dtype.kind not in "iubUSf" or len(classes) < 2:
        raise ValueError("classes must be a 1-D array of at least 2 numbers or strings")
    if len(np.unique(classes)) != len(classes):
        raise ValueError("classes are not unique")
    # two classes: scikit-learn's one row (older files: two)
    rows = (1, 2) if len(classes) == 2 else (len(classes),)
    if coef.dtype not in (np.float32, np.float64) or coef.ndim != 2 \
            or coef.shape[0] not in rows or coef.shape[1] != n_features:
        raise ValueError(f"coef must be float32/float64 of shape ({rows[0]}, "
                         f"{n_features}), got {coef.dtype} {coef.shape}")
    if intercept.dtype != coef.dtype or intercept.shape != (coef.shape[0],):
        raise ValueError(f"intercept must be {coef.dtype} of shape ({coef.shape[0]},)")
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError("coef or intercept contain NaN or infinity")
    if classes.dtype.kind == "f" and not np.isfinite(classes).all():
        raise ValueError("classes contain NaN or infinity")
    model.coef_, model.intercept_, model.classes_ = coef, intercept, classes
    model.n_features_in_ = n_features
    model.n_iter_ = _count(meta.get("n_iter"), "n_iter", minimum=0)
    alpha = meta.get("alpha", params.get("alpha"))  # version 1: the parameter itself
    if not _is_number(alpha) or not alpha >= 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    model.alpha_ = float(alpha)
    curve = meta.get("loss_curve", [])
    if not isinstance(curve, list) or not all(_is_number(v) for v in curve):
        raise TypeError("loss_curve must be a list of numbers")
    model.loss_curve_ = [float(v) for v in curve]
    user = meta.get("user", {})
    if not isinstance(user, dict):
        raise TypeError("user metadata must be a JSON object")
    model.file_metadata_ = user
    names = arrays.get("feature_names_in")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind != "U" or names.shape[0] != n_features:
            raise ValueError(f"feature_names_in must be {n_features} strings")
        model.feature_names_in_ = names.astype(object)
    return model


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_safe(value):
    """``value`` round-tripped through JSON (so saving fails early on what cannot be stored)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=str))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from exc


def _digest(meta_without_digest, arrays):
    """sha256 of the canonical JSON of the metadata and of every array."""
    digest = hashlib.sha256()
    digest.update(json.dumps(meta_without_digest, sort_keys=True, allow_nan=False,
                             separators=(",", ":")).encode())
    for name in _ARRAYS:
        if name in arrays:
            _update(digest, name, arrays[name])
    return digest.hexdigest()


def _digest_v1(arrays):
    digest = hashlib.sha256()
    for name in ("coef", "intercept", "classes"):
        _update(digest, name, arrays[name])
    return digest.hexdigest()


def _update(digest, name, arr):
    arr = np.ascontiguousarray(arr)
    digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
    digest.update(arr.tobytes())

