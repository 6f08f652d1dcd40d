"""Preflight: every check of the catalog passes on the healthy test config and fails (or warns) on its fault,
injected through the public API (config, model= or a wrapped input pipeline)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import seg_cbam, vc_resnet
from tests.conftest import main_in_process
from tests.fault_zoo import FaultyPipeline, PlainCNN, zoo_config
from visioncore_jax.data import DatasetSpec, InputPipeline, build_input
from visioncore_jax.data.sources import dataset_info
from visioncore_jax.errors import InputError
from visioncore_jax.tools.preflight import CHECKS, run_preflight
from visioncore_jax.train.experiment import build_experiment


@pytest.fixture
def config(tfds_data_dir):
    config = zoo_config(tfds_data_dir)
    config.diagnostics.update(overfit_steps=40, lr_find_steps=60)
    return config


@pytest.fixture(scope="module")
def shared_pipeline(tfds_data_dir):
    """The zoo config's input pipeline, built once (tf.data iterators are created per call)."""
    return build_input(zoo_config(tfds_data_dir))


def check(config, name, *, model=None, pipeline=None):
    """The result of one check on the experiment built from `config` and the overrides."""
    experiment = build_experiment(config, model=model, pipeline=pipeline)
    (result,) = run_preflight(experiment, checks=(name,))
    assert result.id == name
    return result


@pytest.fixture
def faulty(shared_pipeline):
    """`faulty(train_fault, eval_fault)`: the shared pipeline with the faults."""
    return lambda train_fault=None, eval_fault=None: FaultyPipeline(shared_pipeline, train_fault, eval_fault)


@pytest.mark.slow
def test_healthy_config_passes_every_check_and_writes_preflight_json(config, shared_pipeline, tmp_path):
    results = run_preflight(build_experiment(config, pipeline=shared_pipeline), str(tmp_path))
    assert [r.id for r in results] == list(CHECKS)
    assert {r.id: r.status for r in results} == {name: "PASS" for name in CHECKS}, [r.message for r in results]
    saved = json.loads((tmp_path / "preflight.json").read_text())
    assert [c["status"] for c in saved["checks"]] == ["PASS"] * len(CHECKS)
    assert (tmp_path / "diagnostics" / "lr_find.png").stat().st_size > 1000


def test_data_nonfinite_nan_pixels(config, faulty):
    def nan_pixels(batch, index):
        batch["color"] = batch["color"].copy()
        batch["color"][3, 5:9, 5:9] = np.nan
        return batch

    result = check(config, "data_nonfinite", pipeline=faulty(nan_pixels))
    assert result.status == "FAIL" and result.evidence["train_color"] == 4 * 4 * 3 * 4  # 4 sampled batches


def test_data_range_images_fed_as_0_255(config, faulty):
    def unnormalized(batch, index):
        batch["color"] = np.round(batch["color"] * 60 + 127)  # 0-255 floats
        return batch

    result = check(config, "data_range", pipeline=faulty(unnormalized))
    assert result.status == "FAIL" and result.evidence["max_abs"] > 200


def test_labels_out_of_range_one_based(config, faulty):
    def one_based(batch, index=None):
        batch["label"] = batch["label"] + 1
        return batch

    result = check(config, "labels_out_of_range", pipeline=faulty(one_based, one_based))
    assert result.status == "FAIL" and result.evidence["max"] == 10


def write_folder(root, split_counts):
    """An image folder root/<split>/<class>/<i>.png with `split_counts[split][class]` random 8x8 images."""
    rng = np.random.default_rng(0)
    for split, counts in split_counts.items():
        for name, count in counts.items():
            os.makedirs(root / split / name)
            for index in range(count):
                image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                tf.io.write_file(str(root / split / name / f"{index}.png"), tf.io.encode_png(image))


def test_class_imbalance_95_percent_in_one_class(config, tmp_path):
    write_folder(tmp_path, {"train": {"a": 152, "b": 4, "c": 4}, "test": {"a": 8, "b": 8, "c": 8}})
    config.data.update(name="image_folder", image_folder=str(tmp_path), train_split="train", eval_split="test",
                       shuffle_buffer=64)
    result = check(config, "class_imbalance")
    assert result.status == "WARN" and result.evidence["largest_share"] == pytest.approx(0.95)
    assert "--config.training.class_weighting=cube_root_inverse" in result.recommendations


def test_split_class_mismatch_split_cut_from_sorted_list(config, tmp_path):
    write_folder(tmp_path, {"train": {"a": 64, "b": 64}, "test": {"c": 16}})
    config.data.update(name="image_folder", image_folder=str(tmp_path), train_split="train", eval_split="test",
                       shuffle_buffer=64)
    with pytest.raises(InputError, match="but not in .*train: c;"):  # an image folder is refused at build time
        build_input(config)
    # Splits that are not scanned (e.g. TFDS sub-splits cut from a class-sorted list) reach the preflight check.
    builder, spec = tfds.folder_dataset.ImageFolder(str(tmp_path)), DatasetSpec(None)
    pipeline = InputPipeline(builder, dataset_info(builder, "train", "test", 8, spec), spec, train_split="train",
                             eval_split="test", seed=0, crop_padding=0, random_flip=False, shuffle_buffer=64)
    result = check(config, "split_class_mismatch", pipeline=pipeline)
    assert result.status == "FAIL" and result.evidence["unseen_classes"] == ["c"]


def test_split_overlap_eval_is_a_slice_of_train(config):
    config.data.eval_split = "train[:512]"
    result = check(config, "split_overlap")
    assert result.status == "FAIL" and result.evidence["also_in_train"] == 512


def test_transform_leak_augmentation_at_eval(config, faulty):
    rng = np.random.default_rng(0)

    def augmented(batch):
        batch["color"] = np.roll(batch["color"], rng.integers(1, 4), axis=2)  # a random shift
        return batch

    assert check(config, "transform_leak", pipeline=faulty(eval_fault=augmented)).status == "FAIL"


def test_pathway_inputs_brightness_from_another_crop(config, faulty):
    def shifted_brightness(batch, index):
        batch["brightness"] = np.roll(batch["brightness"], 2, axis=1)
        return batch

    result = check(config, "pathway_inputs", pipeline=faulty(shifted_brightness))
    assert result.status == "FAIL" and result.evidence["max_abs_luma_error"] > 0.1


def test_init_loss_expects_the_task_loss_of_uniform_predictions(prepare_tfds):
    # The U-Net's loss is cross-entropy + Dice over imbalanced pixel classes: the label entropy (0.86) is no
    # baseline for a fresh model (2.07 at init on the embedded masks); the loss of all-zero logits is.
    config = seg_cbam.get_config()
    config.data.data_dir = prepare_tfds("embedded_masks")
    config.model.widths = (8, 16)
    config.training.batch_size = 16
    result = check(config, "init_loss")
    assert result.status == "PASS", result.message
    assert 1.9 < result.evidence["expected"] < 2.5 and 0.7 < result.evidence["ratio"] < 1.3


def test_init_loss_logits_times_100(config, shared_pipeline):
    result = check(config, "init_loss", model=PlainCNN(logit_scale=100.0), pipeline=shared_pipeline)
    assert result.status == "FAIL" and result.evidence["ratio"] > 3


def test_output_probabilities_softmax_in_the_head(config, shared_pipeline):
    result = check(config, "output_probabilities", model=PlainCNN(softmax_head=True), pipeline=shared_pipeline)
    assert result.status == "FAIL"


def test_gradient_reach_module_outside_the_loss(config, shared_pipeline):
    result = check(config, "gradient_reach", model=PlainCNN(unused_branch=True), pipeline=shared_pipeline)
    assert result.status == "FAIL" and result.evidence["unreached"] == ["unused"]


def test_gradient_reach_sees_past_identity_at_init_residual_blocks(config, shared_pipeline):
    # The VisionCore ResNet's residual branches end in a norm whose scale starts at 0: at initialization no
    # gradient reaches them (the fault zoo's healthy vc_resnet failed this check); after one step it does.
    config.model = vc_resnet.get_config().model
    config.model.vc.channels = (8, 16)
    config.model.vc.strides = (1, 2)
    result = check(config, "gradient_reach", pipeline=shared_pipeline)
    assert result.status == "PASS", result.message
    assert result.evidence["unreached"] == []
    assert "stage0_block0/ConvBlock_0" in result.evidence["reached_after_one_step"]


@pytest.mark.slow
def test_overfit_one_batch_labels_permuted_between_draws(config, faulty):
    calls = iter(range(10_000))

    def permuted(batch, index):
        batch["label"] = np.random.default_rng(next(calls)).permutation(batch["label"])
        return batch

    result = check(config, "overfit_one_batch", pipeline=faulty(permuted))
    assert result.status == "FAIL" and result.evidence["labels_change_between_draws"]


@pytest.mark.slow
def test_overfit_one_batch_gives_a_still_learning_model_more_rounds_but_not_a_stuck_one(config, shared_pipeline):
    config.diagnostics.overfit_steps = 5  # too few for the test model to fit 32 examples in one round
    slow = check(config, "overfit_one_batch", pipeline=shared_pipeline)
    losses = slow.evidence["batch_losses"]
    assert slow.evidence["steps"] > 5 and slow.evidence["steps"] % 5 == 0, (slow.message, slow.evidence)
    assert len(losses) == slow.evidence["steps"] // 5 + 1 and losses[-1] < losses[0]
    assert slow.status == "PASS" or "still falling" in slow.message, slow.message
    # Zero logits: the loss on the batch cannot fall (a dead output layer); one round, then FAIL.
    stuck = check(config, "overfit_one_batch", model=PlainCNN(logit_scale=0.0), pipeline=shared_pipeline)
    assert stuck.status == "FAIL" and stuck.evidence["steps"] == 5, stuck.message
    assert "stopped falling" in stuck.message


@pytest.mark.slow
def test_lr_range_configured_lr_100x_the_suggestion(config, shared_pipeline):
    suggestion = check(config, "lr_range", pipeline=shared_pipeline).evidence["suggested"]
    config.optimizer.learning_rate = 100 * suggestion
    result = check(config, "lr_range", pipeline=shared_pipeline)
    assert result.status == "FAIL" and result.evidence["configured_over_suggested"] == pytest.approx(100, rel=1e-6)


@pytest.mark.slow
def test_main_preflight_mode_exits_non_zero_on_fail(config, tfds_data_dir, tmp_path, monkeypatch):
    # main.py's command line in this process (`tests/test_validation.py` runs the real command as a subprocess).
    monkeypatch.chdir(os.path.dirname(os.path.dirname(__file__)))
    code, stdout, stderr = main_in_process(
        ["--mode=preflight", f"--workdir={tmp_path}", "--config=configs/test.py",
         f"--config.data.data_dir={tfds_data_dir}", "--config.data.train_split=train[:2048]",
         "--config.data.eval_split=train[:256]",
         "--config.diagnostics.lr_find_steps=20", "--config.diagnostics.overfit_steps=5"])
    assert code == 1, stderr[-3000:]
    assert "FAIL  split_overlap" in stdout
    statuses = {c["id"]: c["status"] for c in json.loads((tmp_path / "preflight.json").read_text())["checks"]}
    assert statuses["split_overlap"] == "FAIL" and statuses["pathway_inputs"] == "PASS"


@pytest.mark.slow
def test_lr_range_test_records_the_lr_applied_under_gradient_accumulation(config, shared_pipeline):
    """With k = 2 micro-steps per update the sweep spans ceil(steps / k) updates and each step records the LR
    its update used: steps 2u and 2u + 1 share sweep(u), and the last update reaches the sweep's maximum."""
    from visioncore_jax.tools.lr_find import exponential_sweep, lr_range_test

    config.optimizer.accumulation_steps = 2
    experiment = build_experiment(config, pipeline=shared_pipeline)
    result = lr_range_test(experiment, steps=8, min_lr=1e-4, max_lr=1e-2)
    sweep = exponential_sweep(1e-4, 1e-2, 4)
    expected = [sweep(step // 2) for step in range(len(result.learning_rates))]
    np.testing.assert_allclose(result.learning_rates, expected, rtol=1e-5)
    if not result.stopped_early:
        assert result.learning_rates[-1] == pytest.approx(1e-2, rel=1e-5)
