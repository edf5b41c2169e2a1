"""Where randomness and data splits come from: one definition each.

Every trainer — the estimator, grid search, the benchmarks — takes its epoch order, seed and
validation split from here, so a configuration sees the same minibatches whoever trains it.
"""

import numpy as np

__all__ = [
    "epoch_order",
    "training_seed",
    "resolve_random_state",
    "stratified_split_indices",
    "default_input_scale",
]


def epoch_order(n_samples, seed, epoch, shuffle=True):
    """The sample order of one epoch: a permutation drawn from (seed, epoch), or 0..n-1.

    Every backend is handed this same order, so all of them see the same minibatches.
    """
    if not shuffle:
        return np.arange(n_samples, dtype=np.intp)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n_samples).astype(np.intp)


def training_seed(random_state):
    """The int seed of shuffling and initialisation that ``random_state`` stands for."""
    from sklearn.utils.validation import check_random_state

    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def resolve_random_state(random_state):
    """An int that stands for ``random_state`` everywhere (split, order, init).

    None draws one (so a caller can report it and a rerun can repeat it); a RandomState gives
    its next draw; an int is itself.
    """
    if random_state is None:
        return int(np.random.SeedSequence().entropy % (2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(f"random_state must be an int, RandomState or None, got {random_state!r}")


def stratified_split_indices(y_idx, fraction, seed):
    """Sorted (train, validation) row indices: a stratified, seeded split of ``y_idx``.

    scikit-learn's ``train_test_split``; sorting keeps each part in the data's own order, so
    the epoch shuffles of a given seed are the same whoever splits.
    """
    from sklearn.model_selection import train_test_split

    try:
        train_idx, val_idx = train_test_split(np.arange(len(y_idx)), test_size=fraction,
                                              stratify=y_idx, random_state=seed)
    except ValueError as exc:
        raise ValueError(
            f"cannot hold out a stratified validation_fraction={fraction}: {exc}"
        ) from exc
    train_idx.sort()
    val_idx.sort()
    return train_idx, val_idx


def default_input_scale(X):
    """The input scale a dataset gets unless the caller sets one: 1/255 for uint8 pixels.

    uint8 features are image pixels in every dataset we read (IDX, PNG, the bundled sample);
    the kernels scale them to [0, 1] on the fly, so the data stays uint8 in memory.
    """
    return 1.0 / 255.0 if getattr(X, "dtype", None) == np.uint8 else 1.0
