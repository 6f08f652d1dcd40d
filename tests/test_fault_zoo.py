"""The fault zoo: every finding of the diagnostics catalog, triggered by its fault in a small run on the embedded
data through the public API, must be the top-severity finding (a cause above the symptoms it explains); healthy
runs must produce no warning; every recommendation of every run applies to its config.json and changes it."""

import json

import numpy as np
import pytest

from configs import seg_cbam
from configs import test as test_config
from tests.fault_zoo import (
    FaultyPipeline,
    GatedCNN,
    PlainCNN,
    TinyDual,
    assert_recommendations_apply,
    random_labels,
    skewed_labels,
    zoo_config,
)
from visioncore_jax import diagnostics
from visioncore_jax.data import build_input
from visioncore_jax.train import train_and_evaluate

pytestmark = pytest.mark.slow


def findings_of(config, workdir, **overrides):
    """Trains `config` (with `model=` / `pipeline=` overrides) and returns the analyzer's findings."""
    train_and_evaluate(config, str(workdir), **overrides)
    findings = diagnostics.analyze(str(workdir))
    assert_recommendations_apply(findings, json.loads((workdir / "config.json").read_text()))
    return findings


def assert_top(findings, expected):
    """`expected` is the first (most severe) finding."""
    report = diagnostics.format_findings(findings)
    assert findings and findings[0].id == expected, report
    assert findings[0].severity in ("warning", "error") and findings[0].recommendations, report


def assert_healthy(findings):
    assert not [f for f in findings if f.severity != "info"], diagnostics.format_findings(findings)


@pytest.fixture
def config(tfds_data_dir):
    return zoo_config(tfds_data_dir)


@pytest.fixture(scope="module")
def pipeline(tfds_data_dir):
    """The zoo config's input pipeline, built once for the module."""
    return build_input(zoo_config(tfds_data_dir))


# ---- Healthy runs: no warning or error. ----

def test_healthy_dual_pathway_resnet(config, pipeline, tmp_path):
    config.diagnostics.report = True
    assert_healthy(findings_of(config, tmp_path, pipeline=pipeline))
    assert (tmp_path / "diagnostics" / "report.md").exists()


def test_healthy_single_pathway_resnet(config, pipeline, tmp_path):
    config.model.name = "resnet"
    assert_healthy(findings_of(config, tmp_path, pipeline=pipeline))


def test_healthy_cbam_unet_segmentation(prepare_tfds, tmp_path):
    config = seg_cbam.get_config()
    config.data.update(data_dir=prepare_tfds("embedded_masks"), eval_split="test[:256]")
    config.model.unet.widths = (8, 16)
    config.schedule.warmup_epochs = 0.0
    config.diagnostics.report = False
    config.training.update(num_epochs=-1, num_train_steps=40, batch_size=32, eval_batch_size=256,
                           log_every_steps=10, eval_every_epochs=10 / 125)
    assert_healthy(findings_of(config, tmp_path))


# ---- One fault each. ----

def test_healthy_six_step_test_config_claims_nothing(tfds_data_dir, tmp_path):
    config = test_config.get_config()  # 6 steps: too short to claim the model cannot learn
    config.data.data_dir = tfds_data_dir
    config.diagnostics.report = False
    assert_healthy(findings_of(config, tmp_path))


def test_nonfinite_nan_pixels_from_step_20(config, pipeline, tmp_path):
    def poison(batch, index):
        if index >= 20:
            batch["color"] = np.full_like(batch["color"], np.nan)
        return batch

    config.nan_recovery.enabled = False
    assert_top(findings_of(config, tmp_path, pipeline=FaultyPipeline(pipeline, train_fault=poison)), "nonfinite")


def test_lr_too_high_sgd_lr_50_diverges(config, pipeline, tmp_path):
    config.optimizer.update(name="sgd", learning_rate=50.0, grad_clip_norm=0.0)
    config.nan_recovery.enabled = False
    findings = findings_of(config, tmp_path, pipeline=pipeline)
    assert_top(findings, "lr_too_high")
    # Whether the climb ends in NaN or recovers depends on the last bits of the init (it did each before and after
    # the init compile changed): whatever it left (nonfinite, dead units, collapse) is folded into the LR finding.
    assert [f.id for f in findings if f.severity != "info"] == ["lr_too_high"], diagnostics.format_findings(findings)


def test_lr_too_high_adam_lr_0_1(config, pipeline, tmp_path):
    config.optimizer.update(name="adam", learning_rate=0.1, grad_clip_norm=0.0)
    assert_top(findings_of(config, tmp_path, pipeline=pipeline), "lr_too_high")


def test_lr_too_low_adam_lr_1e_7(config, pipeline, tmp_path):
    config.optimizer.update(name="adam", learning_rate=1e-7)
    config.schedule.min_learning_rate = 0.0
    assert_top(findings_of(config, tmp_path, model=PlainCNN(), pipeline=pipeline), "lr_too_low")


def test_lr_decayed_too_early_plateau_patience_0_on_train_loss(config, pipeline, tmp_path):
    config.plateau.update(enabled=True, metric="train_loss", patience=0, threshold=0.0)
    config.training.update(eval_every_epochs=5 / 128, log_every_steps=5)
    assert_top(findings_of(config, tmp_path, pipeline=pipeline), "lr_decayed_too_early")


def test_lr_schedule_exhausted_exponential_decay_to_1_percent_in_one_epoch_of_eight(config, tmp_path):
    # Exponential decay by 0.01 per epoch: the LR is at 1% of its peak after the first of 8 epochs.
    config.data.train_split = "train[:320]"  # 10 steps an epoch, 80 steps = 8 epochs
    config.schedule.update(name="exponential", decay_rate=0.01, min_learning_rate=0.0)
    config.training.update(num_train_steps=80, eval_every_epochs=1.0)
    assert_top(findings_of(config, tmp_path), "lr_schedule_exhausted")


def test_chance_level_random_labels(config, pipeline, tmp_path):
    faulty = FaultyPipeline(pipeline, train_fault=random_labels)
    assert_top(findings_of(config, tmp_path, pipeline=faulty), "chance_level")


def test_initial_loss_high_output_bias_20_explains_the_collapse(config, pipeline, tmp_path):
    config.optimizer.learning_rate = 1e-4  # at 1e-2 the head's kernel unlearns the bias within 20 steps
    model = PlainCNN(output_bias=(20.0,) + (0.0,) * 9)
    findings = findings_of(config, tmp_path, model=model, pipeline=pipeline)
    assert_top(findings, "initial_loss_high")
    assert findings[0].recommendations[0] == "--mode=preflight"


def test_one_class_collapse_skewed_training_labels(config, pipeline, tmp_path):
    faulty = FaultyPipeline(pipeline, train_fault=skewed_labels)
    findings = findings_of(config, tmp_path, pipeline=faulty)
    assert_top(findings, "one_class_collapse")
    assert findings[0].recommendations[0] == "--config.training.class_weighting=cube_root_inverse"


def test_vanishing_gradients_deep_plain_sigmoid(config, pipeline, tmp_path):
    model = PlainCNN(depth=12, activation="sigmoid")
    assert_top(findings_of(config, tmp_path, model=model, pipeline=pipeline), "vanishing_gradients")


def test_exploding_gradients_weights_times_30(config, pipeline, tmp_path):
    config.optimizer.grad_clip_norm = 0.0
    model = PlainCNN(depth=6, kernel_scale=30.0)
    assert_top(findings_of(config, tmp_path, model=model, pipeline=pipeline), "exploding_gradients")


def test_dead_units_conv_bias_minus_10(config, pipeline, tmp_path):
    assert_top(findings_of(config, tmp_path, model=PlainCNN(bias_init=-10.0), pipeline=pipeline), "dead_units")


def test_saturated_gates_gate_weights_times_50(config, pipeline, tmp_path):
    assert_top(findings_of(config, tmp_path, model=GatedCNN(gate_scale=50.0), pipeline=pipeline), "saturated_gates")


def test_params_not_updating_stop_gradient_on_brightness(config, pipeline, tmp_path):
    model = TinyDual(stop_brightness=True)
    assert_top(findings_of(config, tmp_path, model=model, pipeline=pipeline), "params_not_updating")


def test_pathway_imbalance_brightness_scaled_1e_4(config, pipeline, tmp_path):
    def scale_brightness(batch, index):
        batch["brightness"] = batch["brightness"] * 1e-4
        return batch

    faulty = FaultyPipeline(pipeline, train_fault=scale_brightness)
    assert_top(findings_of(config, tmp_path, model=TinyDual(), pipeline=faulty), "pathway_imbalance")


def test_clipping_dominates_clip_norm_1e_4(config, pipeline, tmp_path):
    # SGD: its update is LR x the clip norm (Adam divides the clip's scale out: an info there, tests/test_rules.py).
    config.optimizer.update(name="sgd", grad_clip_norm=1e-4)
    assert_top(findings_of(config, tmp_path, pipeline=pipeline), "clipping_dominates")


def test_over_regularization(config, pipeline, tmp_path):
    config.optimizer.weight_decay = 0.5
    config.model.dropout = 0.9
    config.training.label_smoothing = 0.6
    assert_top(findings_of(config, tmp_path, pipeline=pipeline), "over_regularization")


def test_overfitting_128_images_40_epochs(config, tmp_path):
    config.data.train_split = "train[:128]"  # 4 steps an epoch
    # Four stages: the capacity to memorize 128 images in 160 steps. The 2-stage test model reaches 50% train
    # accuracy (width 8) or 85% with eval loss flat within 12% (width 32): not memorizing, and no finding.
    config.model.num_blocks = (1, 1, 1, 1)
    config.model.dropout = 0.0
    config.optimizer.weight_decay = 0.0
    config.data.update(crop_padding=0, random_flip=False)
    config.training.update(num_train_steps=160, eval_every_epochs=2.0, log_every_steps=8)
    assert_top(findings_of(config, tmp_path), "overfitting")


def test_nan_skips_nan_injected_into_a_few_batches(config, pipeline, tmp_path):
    def poison(batch, index):
        if index in (7, 23, 41):
            batch["color"] = np.full_like(batch["color"], np.nan)
        return batch

    findings = findings_of(config, tmp_path, pipeline=FaultyPipeline(pipeline, train_fault=poison))
    assert_top(findings, "nan_skips")
    assert findings[0].evidence["skipped_steps"] == 3


def test_loss_plateau_lr_dropped_to_1e_9_mid_run(config, pipeline, tmp_path):
    config.training.num_train_steps = 60
    train_and_evaluate(config, str(tmp_path), pipeline=pipeline)
    resumed = config.copy_and_resolve_references()
    resumed.training.num_train_steps = 120
    resumed.optimizer.learning_rate = 1e-9  # the "fixed" config of a resumed run
    resumed.schedule.min_learning_rate = 0.0
    assert_top(findings_of(resumed, tmp_path, pipeline=pipeline), "loss_plateau")
