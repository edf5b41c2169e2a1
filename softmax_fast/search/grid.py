"""The grid: which hyperparameters can be searched, their values, one key per configuration."""

import json

import numpy as np

__all__ = ["SEARCHABLE_PARAMS", "CORE_PARAMS", "METRIC_KEYS", "MAX_CONFIGURATIONS", "expand_grid",
           "full_params", "config_key", "project", "coerce"]

#: Hyperparameters a grid may contain, with the value used when the grid omits them (the
#: estimator's defaults, except ``learning_rate``: a search compares constant rates).
SEARCHABLE_PARAMS = {
    "batch_size": 32,
    "learning_rate_init": 0.1,
    "max_iter": 10,
    "alpha": 1e-5,
    "momentum": 0.0,
    "nesterovs_momentum": False,
    "learning_rate": "constant",
    "power_t": 0.5,
    "lr_step_size": 2,
    "lr_gamma": 0.5,
    "tol": 1e-4,
    "n_iter_no_change": 10,
    "shuffle": True,
    "init": "zeros",
}

#: Hyperparameters every result row carries (plus any other key of the grid).
CORE_PARAMS = ("batch_size", "learning_rate_init", "max_iter", "alpha", "momentum")

#: Keys every result row carries after its hyperparameters.
METRIC_KEYS = ("val_loss", "val_accuracy", "train_loss", "n_iter", "seconds", "status",
               "search_id")


def coerce(name, value):
    """A grid value as the type of its default (CSV round trips give strings)."""
    default = SEARCHABLE_PARAMS[name]
    if isinstance(default, bool):
        if isinstance(value, str):
            if value not in ("True", "False", "true", "false", "1", "0"):
                raise ValueError(f"{name}: expected a bool, got {value!r}")
            return value in ("True", "true", "1")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, str):
            value = float(value)
        if float(value) != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    return str(value)


#: Most configurations a grid may have unless the caller raises the cap.
MAX_CONFIGURATIONS = 100_000


def expand_grid(param_grid, max_configurations=MAX_CONFIGURATIONS):
    """(configurations with every searchable parameter, the grid's keys in order).

    The grid's size is checked against ``max_configurations`` before anything is expanded.
    """
    from sklearn.model_selection import ParameterGrid

    from softmax_fast.estimator import SoftmaxRegression

    grids = [param_grid] if isinstance(param_grid, dict) else list(param_grid)
    grid_keys = []
    for grid in grids:
        if not isinstance(grid, dict):
            raise TypeError("param_grid must be a dict or a list of dicts")
        for key, values in grid.items():
            if key not in SEARCHABLE_PARAMS:
                raise ValueError(f"unknown grid parameter {key!r}; searchable: "
                                 f"{', '.join(SEARCHABLE_PARAMS)}")
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise TypeError(f"param_grid[{key!r}] must be a list of values, got {values!r}")
            if key not in grid_keys:
                grid_keys.append(key)
    try:
        size = len(ParameterGrid(grids))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"param_grid: {exc}") from exc
    if size > max_configurations:
        raise ValueError(f"the grid has {size:,} configurations, more than "
                         f"max_configurations={max_configurations:,}; narrow it or raise the "
                         "cap")
    configs = []
    for params in ParameterGrid(grids):
        full = full_params(params)
        # the estimator's own checks give the same messages as a direct fit would
        SoftmaxRegression(**full)._check_params()
        configs.append(full)
    if not configs:
        raise ValueError("param_grid is empty")
    return configs, grid_keys


def full_params(row):
    return {k: coerce(k, row[k]) if k in row and row[k] is not None else v
            for k, v in SEARCHABLE_PARAMS.items()}


def config_key(full):
    return json.dumps([full[k] for k in SEARCHABLE_PARAMS])


def project(row, header):
    return {k: row.get(k) for k in header}
