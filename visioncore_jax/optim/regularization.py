"""Progressive regularization: dropout rate and label smoothing as piecewise-constant functions of the epoch."""

import ml_collections


def piecewise_value(schedule, base: float, epoch: float) -> float:
    """The value of a `((start_epoch, value), ...)` piecewise-constant schedule at `epoch` (`base` before the
    first start)."""
    value = base
    for start, scheduled in sorted(schedule):
        if epoch >= start:
            value = scheduled
    return float(value)


def regularization_at(config: ml_collections.ConfigDict, epoch: float) -> dict[str, float]:
    """Dropout rate and label smoothing at `epoch` (progressive regularization); fed to the jitted step as
    values, so changing them never recompiles."""
    reg = config.regularization
    return {
        "dropout_rate": piecewise_value(reg.dropout_schedule, config.model.dropout, epoch),
        "label_smoothing": piecewise_value(reg.label_smoothing_schedule, config.training.label_smoothing, epoch),
    }
