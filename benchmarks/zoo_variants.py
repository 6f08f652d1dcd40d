"""The fault-zoo benchmark's runs: tiny configs of five model families on four datasets (three embedded, plus
scikit-learn's digits written as an image folder), each catalog id's faults injected the way users make them
(config overrides first; `tests/fault_zoo.py`'s models and FaultyPipeline only where no config route exists), and
healthy runs across optimizers and schedules.

Variant k of an id is in the calibration half when k is even, in the held-out half when k is odd.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from configs import seg_cbam, vc_resnet, video_convgru
from configs import test as test_config
from tests.fault_zoo import FaultyPipeline, GatedCNN, PlainCNN, TinyDual, random_labels

FAMILIES = ("dual_resnet", "resnet", "vc_resnet", "video_convgru", "seg_cbam")
BATCH, EVAL_EVERY, STEPS = 32, 10, 60
# Training examples of each dataset as the benchmark slices it (fixes the eval cadence in steps).
TRAIN_EXAMPLES = {"shapes": 4096, "clips": 2048, "masks": 2048, "longtail": 4096}
DIGITS_TEST_SHARE = 0.2


@dataclasses.dataclass(frozen=True)
class Context:
    """Where the benchmark writes: TFDS data, image folders, run workdirs."""

    scratch: str

    @property
    def tfds(self) -> str:
        return os.path.join(self.scratch, "tfds")

    def digits(self, variant: str = "clean") -> str:
        """The digits image folder of `variant` (written on first use)."""
        root = os.path.join(self.scratch, "digits", variant)
        if not os.path.exists(os.path.join(root, ".complete")):
            write_digits_folder(root, variant)
        return root


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmark run. `expected` is the catalog id of the injected fault (None: healthy); `kind` 'run'
    (trained, then analysed) or 'preflight' (the preflight checks); `overrides` are dotted config fields;
    `api(ctx, config)` returns `model=` / `pipeline=` replacements; `resume` the overrides of a second leg
    trained on in the same workdir (a run resumed with a changed config); `digits` the image-folder variant;
    `cause` the catalog id of the injected mistake itself when `expected` is its symptom (a NaN from an LR typed
    far too high): then naming `cause` first, with `expected` among the symptoms it explains, is naming it."""

    name: str
    expected: str | None
    kind: str
    family: str
    dataset: str
    magnitude: str
    overrides: dict = dataclasses.field(default_factory=dict)
    api: Callable | None = None
    resume: dict | None = None
    digits: str = "clean"
    cause: str | None = None
    index: int = 0

    @property
    def half(self) -> str:
        """'calibration' (even index) or 'held_out' (odd index)."""
        return "calibration" if self.index % 2 == 0 else "held_out"

    @property
    def config_route(self) -> bool:
        """True when the fault is in the config alone (its run can be repaired from config.json)."""
        return self.api is None and self.resume is None


def write_digits_folder(root: str, variant: str, seed: int = 0) -> None:
    """scikit-learn's 8x8 digits, upscaled x4 to 32x32 gray RGB PNGs, as root/{train,test}/<digit>/*.png with a
    stratified 80/20 split. Variants: 'clean'; 'shuffled' (images filed under random classes); 'skewed'
    (training keeps 5% of every class but 0); 'missing' (training has no 7, 8, 9)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    labels = digits.target.copy()
    test = np.zeros(len(labels), bool)
    for k in range(10):
        members = rng.permutation(np.flatnonzero(labels == k))
        test[members[:round(DIGITS_TEST_SHARE * len(members))]] = True
    keep = np.ones(len(labels), bool)
    if variant == "shuffled":
        labels = rng.permutation(labels)
    elif variant == "skewed":
        keep = test | (labels == 0) | (rng.uniform(size=len(labels)) < 0.05)
    elif variant == "missing":
        keep = test | (labels < 7)
    elif variant != "clean":
        raise ValueError(f"Unknown digits variant {variant!r}.")
    images = np.kron(digits.images / 16.0 * 255.0, np.ones((4, 4))).round().astype(np.uint8)
    for index in np.flatnonzero(keep):
        directory = os.path.join(root, "test" if test[index] else "train", str(labels[index]))
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(np.stack([images[index]] * 3, -1)).save(os.path.join(directory, f"{index}.png"))
    open(os.path.join(root, ".complete"), "w").close()


def base_config(family: str, dataset: str, ctx: Context, digits: str = "clean", steps: int = STEPS):
    """A tiny config of `family` on `dataset`: batch 32, LR 1e-2 (AdamW, cosine, no warmup), `steps` steps,
    an evaluation (a diagnostics record) every 10 steps, no report plots."""
    if family in ("dual_resnet", "resnet"):
        config = test_config.get_config()
        config.model.update(name=family, num_blocks=(1, 1, 1, 1))  # four stages, as every recorded zoo run had
    elif family == "vc_resnet":
        config = vc_resnet.get_config()
        config.model.vc.channels = (8, 16, 32)
    elif family == "video_convgru":
        config = video_convgru.get_config()
        config.model.encoder_widths = (8, 16)
        config.model.gru.hidden = 16
    elif family == "seg_cbam":
        config = seg_cbam.get_config()
        config.model.unet.widths = (8, 16)
    else:
        raise ValueError(f"Unknown family {family!r}; one of {FAMILIES}.")
    config.data.data_dir = ctx.tfds
    if dataset == "digits":
        root = ctx.digits(digits)
        train_examples = sum(len(files) for _, _, files in os.walk(os.path.join(root, "train")))
        config.data.update(name="image_folder", image_folder=root, train_split="train", eval_split="test",
                           random_flip=False, shuffle_buffer=2048)
    else:
        name = {"shapes": "embedded_shapes", "clips": "embedded_clips", "masks": "embedded_masks",
                "longtail": "embedded_shapes_longtail"}[dataset]
        train_examples = TRAIN_EXAMPLES[dataset]
        split = "train" if dataset == "longtail" else f"train[:{train_examples}]"
        config.data.update(name=name, train_split=split, eval_split="test[:256]")
    config.optimizer.learning_rate = 1e-2
    config.schedule.warmup_epochs = 0.0
    config.diagnostics.report = False
    config.training.update(batch_size=BATCH, eval_batch_size=256, num_epochs=-1, num_train_steps=steps,
                           log_every_steps=EVAL_EVERY, checkpoint_every_steps=10_000,
                           eval_every_epochs=EVAL_EVERY / (train_examples // BATCH))
    return config


# ---- API faults (no config route): batch corruptions and the zoo's models. ----

def _pipeline(fault=None, eval_fault=None):
    """api(): the configured pipeline wrapped with train / eval faults."""
    from visioncore_jax.data import build_input

    return lambda ctx, config: {"pipeline": FaultyPipeline(build_input(config), fault, eval_fault)}


def _model(factory):
    """api(): a zoo model (num_classes from the dataset: digits and shapes have 10)."""
    return lambda ctx, config: {"model": factory()}


def _model_and_pipeline(factory, fault):
    from visioncore_jax.data import build_input

    return lambda ctx, config: {"model": factory(), "pipeline": FaultyPipeline(build_input(config), fault)}


def _poison(indices):
    def fault(batch, index):
        if index in indices:
            batch["color"] = np.full_like(batch["color"], np.nan)
        return batch
    return fault


def _scale_brightness(factor):
    def fault(batch, index):
        batch["brightness"] = batch["brightness"] * factor
        return batch
    return fault


def _nan_pixels(size):
    def fault(batch, index):
        batch["color"] = batch["color"].copy()
        batch["color"][3, 2:2 + size, 2:2 + size] = np.nan
        return batch
    return fault


def _one_based(batch, index=None):
    batch["label"] = batch["label"] + 1
    return batch


def _eval_shift(pixels):
    rng = np.random.default_rng(0)

    def fault(batch):
        batch["color"] = np.roll(batch["color"], rng.integers(1, pixels + 1), axis=-2)
        return batch
    return fault


def _brightness_shift(pixels):
    def fault(batch, index):
        batch["brightness"] = np.roll(batch["brightness"], pixels, axis=-3)
        return batch
    return fault


def _permuted_labels():
    calls = iter(range(1_000_000))

    def fault(batch, index):
        batch["label"] = np.random.default_rng(next(calls)).permutation(batch["label"])
        return batch
    return fault


NO_CLIP_NO_RECOVERY = {"optimizer.grad_clip_norm": 0.0, "nan_recovery.enabled": False}
# The healthy runs' SGD (Nesterov momentum at LR 0.05).
SGD = {"optimizer.name": "sgd", "optimizer.nesterov": True, "optimizer.learning_rate": 0.05}
DIGITS_UINT8_SCALE = {"data.mean": (0.0, 0.0, 0.0), "data.std": (1 / 255, 1 / 255, 1 / 255)}


def _run_variants() -> list[tuple]:
    """(expected, family, dataset, magnitude, fields) of each run-finding fault."""
    return [
        # nonfinite: a typed LR far too high without clipping or NaN recovery (the LR is the cause).
        ("nonfinite", "dual_resnet", "shapes", "extreme", dict(overrides={"optimizer.name": "sgd",
         "optimizer.learning_rate": 50.0, **NO_CLIP_NO_RECOVERY}, cause="lr_too_high")),
        ("nonfinite", "resnet", "digits", "extreme", dict(overrides={"optimizer.name": "sgd",
         "optimizer.learning_rate": 200.0, **NO_CLIP_NO_RECOVERY}, cause="lr_too_high")),
        ("nonfinite", "vc_resnet", "shapes", "extreme", dict(overrides={"optimizer.name": "sgd",
         "optimizer.learning_rate": 100.0, **NO_CLIP_NO_RECOVERY}, cause="lr_too_high")),
        ("nonfinite", "seg_cbam", "masks", "extreme", dict(overrides={"optimizer.name": "sgd",
         "optimizer.learning_rate": 100.0, **NO_CLIP_NO_RECOVERY}, cause="lr_too_high")),
        # lr_too_high: Adam LR typed x10-x100.
        ("lr_too_high", "dual_resnet", "shapes", "moderate", dict(overrides={"optimizer.name": "adam",
         "optimizer.learning_rate": 0.1, "optimizer.grad_clip_norm": 0.0})),
        ("lr_too_high", "video_convgru", "clips", "extreme", dict(overrides={"optimizer.name": "adam",
         "optimizer.learning_rate": 0.5})),
        ("lr_too_high", "resnet", "digits", "extreme", dict(overrides={"optimizer.learning_rate": 1.0})),
        ("lr_too_high", "vc_resnet", "shapes", "moderate", dict(overrides={"optimizer.learning_rate": 0.3})),
        # lr_too_low: LR typed /1000 and below.
        ("lr_too_low", "dual_resnet", "shapes", "mild", dict(overrides={"optimizer.learning_rate": 1e-5,
         "schedule.min_learning_rate": 0.0})),
        ("lr_too_low", "resnet", "digits", "extreme", dict(overrides={"optimizer.learning_rate": 1e-7,
         "schedule.min_learning_rate": 0.0})),
        ("lr_too_low", "video_convgru", "clips", "moderate", dict(overrides={"optimizer.learning_rate": 1e-6,
         "schedule.min_learning_rate": 0.0})),
        ("lr_too_low", "seg_cbam", "masks", "moderate", dict(overrides={"optimizer.learning_rate": 1e-6,
         "schedule.min_learning_rate": 0.0})),
        # lr_decayed_too_early: reduce-on-plateau with patience 0 on a noisy metric (the per-window train loss, or
        # the default eval accuracy of a barely trained model).
        ("lr_decayed_too_early", "dual_resnet", "shapes", "extreme", dict(overrides={"plateau.enabled": True,
         "plateau.metric": "train_loss", "plateau.patience": 0, "plateau.threshold": 0.0,
         "training.eval_every_epochs": 5 / 128, "training.log_every_steps": 5})),
        ("lr_decayed_too_early", "resnet", "digits", "moderate", dict(overrides={"plateau.enabled": True,
         "plateau.patience": 0, "plateau.factor": 0.3})),
        ("lr_decayed_too_early", "vc_resnet", "shapes", "moderate", dict(overrides={"plateau.enabled": True,
         "plateau.metric": "eval_loss", "plateau.patience": 0, "plateau.threshold": 0.05})),
        # lr_schedule_exhausted: a decay that ends long before the run does.
        ("lr_schedule_exhausted", "dual_resnet", "shapes", "extreme", dict(overrides={"data.train_split":
         "train[:320]", "schedule.name": "exponential", "schedule.decay_rate": 0.01,
         "schedule.min_learning_rate": 0.0, "training.num_train_steps": 80, "training.eval_every_epochs": 1.0})),
        ("lr_schedule_exhausted", "resnet", "digits", "moderate", dict(overrides={"schedule.name":
         "exponential", "schedule.decay_rate": 0.02, "schedule.min_learning_rate": 0.0,
         "training.num_train_steps": 132})),
        ("lr_schedule_exhausted", "video_convgru", "clips", "moderate", dict(overrides={"data.train_split":
         "train[:320]", "schedule.name": "cosine_restarts", "schedule.cycle_epochs": 1.0,
         "schedule.cycle_mult": 1.0, "schedule.cycle_peak_decay": 0.01, "schedule.min_learning_rate": 0.0,
         "training.num_train_steps": 80, "training.eval_every_epochs": 1.0})),
        # chance_level: labels unrelated to the images.
        ("chance_level", "resnet", "digits", "extreme", dict(digits="shuffled")),
        ("chance_level", "dual_resnet", "shapes", "extreme", dict(api=_pipeline(random_labels))),
        ("chance_level", "vc_resnet", "shapes", "extreme", dict(api=_pipeline(random_labels))),
        ("chance_level", "dual_resnet", "digits", "extreme", dict(digits="shuffled")),
        # one_class_collapse: a skewed training folder (the data cause).
        ("one_class_collapse", "resnet", "digits", "extreme", dict(digits="skewed")),
        ("one_class_collapse", "dual_resnet", "digits", "extreme", dict(digits="skewed")),
        ("one_class_collapse", "plain_cnn", "digits", "extreme", dict(digits="skewed", api=_model(PlainCNN))),
        # initial_loss_high: a head biased to one class, or logits scaled up at initialisation (an absurd start).
        ("initial_loss_high", "plain_cnn", "shapes", "extreme", dict(overrides={"optimizer.learning_rate": 1e-4},
         api=_model(lambda: PlainCNN(output_bias=(20.0,) + (0.0,) * 9)))),
        ("initial_loss_high", "plain_cnn", "digits", "moderate", dict(overrides={"optimizer.learning_rate":
         1e-4}, api=_model(lambda: PlainCNN(output_bias=(10.0,) + (0.0,) * 9)))),
        ("initial_loss_high", "plain_cnn", "shapes", "moderate", dict(api=_model(lambda: PlainCNN(logit_scale=30.0)))),
        # vanishing_gradients: deep plain sigmoid nets.
        ("vanishing_gradients", "plain_cnn", "shapes", "extreme", dict(api=_model(
            lambda: PlainCNN(depth=12, activation="sigmoid")))),
        ("vanishing_gradients", "plain_cnn", "digits", "moderate", dict(api=_model(
            lambda: PlainCNN(depth=10, activation="sigmoid")))),
        ("vanishing_gradients", "plain_cnn", "shapes", "extreme", dict(api=_model(
            lambda: PlainCNN(depth=16, activation="sigmoid")))),
        # exploding_gradients: weights initialised too large, no normalization or clipping.
        ("exploding_gradients", "plain_cnn", "shapes", "extreme", dict(overrides={"optimizer.grad_clip_norm": 0.0},
         api=_model(lambda: PlainCNN(depth=6, kernel_scale=30.0)))),
        ("exploding_gradients", "plain_cnn", "digits", "moderate", dict(overrides={"optimizer.grad_clip_norm":
         0.0}, api=_model(lambda: PlainCNN(depth=8, kernel_scale=10.0)))),
        ("exploding_gradients", "plain_cnn", "shapes", "mild", dict(overrides={"optimizer.grad_clip_norm": 0.0},
         api=_model(lambda: PlainCNN(depth=6, kernel_scale=8.0)))),
        # dead_units: conv biases initialised negative.
        ("dead_units", "plain_cnn", "shapes", "extreme", dict(api=_model(lambda: PlainCNN(bias_init=-10.0)))),
        ("dead_units", "plain_cnn", "digits", "moderate", dict(api=_model(lambda: PlainCNN(bias_init=-5.0)))),
        ("dead_units", "plain_cnn", "shapes", "extreme", dict(api=_model(lambda: PlainCNN(bias_init=-20.0)))),
        # saturated_gates: gate weights initialised far too large.
        ("saturated_gates", "gated_cnn", "shapes", "extreme", dict(api=_model(lambda: GatedCNN(gate_scale=50.0)))),
        ("saturated_gates", "gated_cnn", "digits", "extreme", dict(api=_model(lambda: GatedCNN(gate_scale=100.0)))),
        ("saturated_gates", "gated_cnn", "shapes", "moderate", dict(api=_model(lambda: GatedCNN(gate_scale=30.0)))),
        # params_not_updating: an LR multiplier of 0 (a config route), or a stop_gradient.
        ("params_not_updating", "dual_resnet", "shapes", "extreme", dict(overrides={"optimizer.lr_multipliers":
         (("brightness/.*", 0.0),)})),
        ("params_not_updating", "tiny_dual", "shapes", "extreme", dict(api=_model(
            lambda: TinyDual(stop_brightness=True)))),
        ("params_not_updating", "resnet", "digits", "extreme", dict(overrides={"optimizer.lr_multipliers":
         (("color/stage1.*", 0.0),)})),
        # pathway_imbalance: the brightness input scaled down.
        ("pathway_imbalance", "tiny_dual", "shapes", "extreme", dict(api=_model_and_pipeline(
            TinyDual, _scale_brightness(1e-4)))),
        ("pathway_imbalance", "tiny_dual", "digits", "extreme", dict(api=_model_and_pipeline(
            TinyDual, _scale_brightness(1e-5)))),
        ("pathway_imbalance", "tiny_dual", "shapes", "moderate", dict(api=_model_and_pipeline(
            TinyDual, _scale_brightness(1e-3)))),
        # clipping_dominates: a clip norm typed far too small, under SGD, whose update is LR x the clip norm (Adam
        # divides the clip's scale out: AdamW clipped to 1e-3..1e-5 learned as well as with the clip raised).
        ("clipping_dominates", "dual_resnet", "shapes", "extreme", dict(overrides={
            **SGD, "optimizer.grad_clip_norm": 1e-4})),
        ("clipping_dominates", "resnet", "digits", "moderate", dict(overrides={
            **SGD, "optimizer.grad_clip_norm": 1e-3})),
        ("clipping_dominates", "video_convgru", "clips", "extreme", dict(overrides={
            **SGD, "optimizer.grad_clip_norm": 1e-5})),
        # over_regularization: heavy weight decay / dropout / label smoothing.
        ("over_regularization", "dual_resnet", "shapes", "extreme", dict(overrides={"optimizer.weight_decay": 0.5,
         "model.dropout": 0.9, "training.label_smoothing": 0.6})),
        ("over_regularization", "resnet", "digits", "moderate", dict(overrides={"optimizer.weight_decay": 1.0,
         "model.dropout": 0.8})),
        ("over_regularization", "video_convgru", "clips", "moderate", dict(overrides={"model.dropout": 0.8,
         "training.label_smoothing": 0.9})),
        # overfitting: a tiny training split trained long without regularization.
        ("overfitting", "dual_resnet", "shapes", "extreme", dict(overrides={"data.train_split": "train[:256]",
         "model.dropout": 0.0, "optimizer.weight_decay": 0.0, "data.crop_padding": 0, "data.random_flip": False,
         "training.num_train_steps": 320, "training.eval_every_epochs": 2.0, "training.log_every_steps": 16})),
        ("overfitting", "vc_resnet", "shapes", "extreme", dict(overrides={"data.train_split": "train[:128]",
         "model.dropout": 0.0, "optimizer.weight_decay": 0.0, "data.crop_padding": 0, "data.random_flip": False,
         "training.num_train_steps": 240, "training.eval_every_epochs": 4.0, "training.log_every_steps": 16})),
        ("overfitting", "resnet", "shapes", "moderate", dict(overrides={"data.train_split": "train[:320]",
         "model.dropout": 0.0, "optimizer.weight_decay": 0.0, "data.crop_padding": 0, "data.random_flip": False,
         "training.num_train_steps": 300, "training.eval_every_epochs": 3.0, "training.log_every_steps": 10})),
        # nan_skips: NaN batches in the stream (corrupt files).
        ("nan_skips", "dual_resnet", "shapes", "mild", dict(api=_pipeline(_poison((7, 23, 41))))),
        ("nan_skips", "resnet", "digits", "moderate", dict(api=_pipeline(_poison(tuple(range(5, 60, 6)))))),
        ("nan_skips", "vc_resnet", "shapes", "mild", dict(api=_pipeline(_poison((12,))))),
        # loss_plateau: a run resumed with another (tiny) LR.
        ("loss_plateau", "dual_resnet", "shapes", "extreme", dict(resume={"training.num_train_steps": 120,
         "optimizer.learning_rate": 1e-9, "schedule.min_learning_rate": 0.0})),
        ("loss_plateau", "resnet", "digits", "extreme", dict(resume={"training.num_train_steps": 120,
         "optimizer.learning_rate": 1e-7, "schedule.min_learning_rate": 0.0})),
        ("loss_plateau", "video_convgru", "clips", "moderate", dict(resume={"training.num_train_steps": 120,
         "optimizer.learning_rate": 1e-6, "schedule.min_learning_rate": 0.0})),
    ]


def _preflight_variants() -> list[tuple]:
    """(expected, family, dataset, magnitude, fields) of each preflight-check fault."""
    return [
        ("data_nonfinite", "dual_resnet", "shapes", "mild", dict(api=_pipeline(_nan_pixels(4)))),
        ("data_nonfinite", "resnet", "digits", "mild", dict(api=_pipeline(_nan_pixels(1)))),
        ("data_nonfinite", "vc_resnet", "shapes", "extreme", dict(api=_pipeline(_nan_pixels(16)))),
        ("data_range", "dual_resnet", "shapes", "extreme", dict(overrides=DIGITS_UINT8_SCALE)),
        ("data_range", "resnet", "digits", "extreme", dict(overrides=DIGITS_UINT8_SCALE)),
        ("data_range", "vc_resnet", "shapes", "moderate", dict(overrides={"data.mean": (0.0, 0.0, 0.0),
         "data.std": (0.02, 0.02, 0.02)})),
        ("labels_out_of_range", "dual_resnet", "shapes", "mild", dict(api=_pipeline(_one_based, _one_based))),
        ("labels_out_of_range", "resnet", "digits", "mild", dict(api=_pipeline(_one_based, _one_based))),
        ("labels_out_of_range", "vc_resnet", "shapes", "mild", dict(api=_pipeline(_one_based))),
        ("class_imbalance", "resnet", "digits", "extreme", dict(digits="skewed")),
        ("class_imbalance", "dual_resnet", "longtail", "moderate", {}),
        ("class_imbalance", "vc_resnet", "digits", "extreme", dict(digits="skewed")),
        ("split_class_mismatch", "resnet", "digits", "moderate", dict(digits="missing")),
        ("split_class_mismatch", "dual_resnet", "digits", "moderate", dict(digits="missing")),
        ("split_class_mismatch", "vc_resnet", "digits", "moderate", dict(digits="missing")),
        ("split_overlap", "dual_resnet", "shapes", "extreme", dict(overrides={"data.eval_split": "train[:512]"})),
        ("split_overlap", "resnet", "digits", "extreme", dict(overrides={"data.eval_split": "train"})),
        ("split_overlap", "video_convgru", "clips", "moderate", dict(overrides={"data.eval_split":
         "train[:128]"})),
        ("transform_leak", "dual_resnet", "shapes", "moderate", dict(api=_pipeline(eval_fault=_eval_shift(3)))),
        ("transform_leak", "resnet", "digits", "mild", dict(api=_pipeline(eval_fault=_eval_shift(1)))),
        ("transform_leak", "vc_resnet", "shapes", "moderate", dict(api=_pipeline(eval_fault=_eval_shift(4)))),
        ("pathway_inputs", "dual_resnet", "shapes", "moderate", dict(api=_pipeline(_brightness_shift(2)))),
        ("pathway_inputs", "dual_resnet", "digits", "mild", dict(api=_pipeline(_brightness_shift(1)))),
        ("pathway_inputs", "dual_resnet", "shapes", "extreme", dict(api=_pipeline(_brightness_shift(8)))),
        ("init_loss", "plain_cnn", "shapes", "extreme", dict(api=_model(lambda: PlainCNN(logit_scale=100.0)))),
        ("init_loss", "plain_cnn", "digits", "moderate", dict(api=_model(lambda: PlainCNN(logit_scale=30.0)))),
        ("init_loss", "plain_cnn", "shapes", "moderate", dict(api=_model(lambda: PlainCNN(logit_scale=20.0)))),
        ("output_probabilities", "plain_cnn", "shapes", "extreme", dict(api=_model(
            lambda: PlainCNN(softmax_head=True)))),
        ("output_probabilities", "plain_cnn", "digits", "extreme", dict(api=_model(
            lambda: PlainCNN(softmax_head=True)))),
        ("output_probabilities", "plain_cnn", "shapes", "extreme", dict(api=_model(
            lambda: PlainCNN(depth=2, softmax_head=True)))),
        ("gradient_reach", "plain_cnn", "shapes", "extreme", dict(api=_model(lambda: PlainCNN(unused_branch=True)))),
        ("gradient_reach", "plain_cnn", "digits", "extreme", dict(api=_model(
            lambda: PlainCNN(unused_branch=True)))),
        ("gradient_reach", "tiny_dual", "shapes", "extreme", dict(api=_model(
            lambda: TinyDual(stop_brightness=True)))),
        ("overfit_one_batch", "dual_resnet", "shapes", "extreme", dict(api=_pipeline(_permuted_labels()))),
        ("overfit_one_batch", "resnet", "digits", "extreme", dict(api=_pipeline(_permuted_labels()))),
        ("overfit_one_batch", "vc_resnet", "shapes", "extreme", dict(api=_pipeline(_permuted_labels()))),
        ("lr_range", "dual_resnet", "shapes", "extreme", dict(overrides={"optimizer.learning_rate": 3.0})),
        ("lr_range", "resnet", "digits", "extreme", dict(overrides={"optimizer.learning_rate": 10.0})),
        ("lr_range", "vc_resnet", "shapes", "moderate", dict(overrides={"optimizer.learning_rate": 1.0})),
    ]


def _healthy_variants() -> list[tuple]:
    """(None, family, dataset, kind, fields) of the healthy runs: optimizers x schedules x families, and a healthy
    preflight of each of the five families."""
    onecycle = {"schedule.name": "onecycle"}
    sgdr = {"schedule.name": "cosine_restarts", "schedule.cycle_epochs": -1.0, "schedule.cycle_steps": 40}
    exponential = {"schedule.name": "exponential", "schedule.decay_rate": 0.5}
    return [
        (None, "dual_resnet", "shapes", "run", {}),
        (None, "resnet", "shapes", "run", dict(overrides=SGD)),
        (None, "vc_resnet", "shapes", "run", dict(overrides={"optimizer.name": "adam", **onecycle})),
        (None, "video_convgru", "clips", "run", {}),
        (None, "seg_cbam", "masks", "run", dict(overrides={"optimizer.name": "adam"})),
        (None, "resnet", "digits", "run", dict(overrides={"optimizer.name": "lamb", **sgdr})),
        (None, "dual_resnet", "digits", "run", dict(overrides={**SGD, **exponential})),
        (None, "dual_resnet", "shapes", "run", dict(overrides={"optimizer.name": "lamb", **onecycle})),
        (None, "resnet", "shapes", "run", dict(overrides={"optimizer.name": "adam", **exponential})),
        (None, "vc_resnet", "digits", "run", dict(overrides=sgdr)),
        (None, "video_convgru", "clips", "run", dict(overrides={"optimizer.name": "adam", **onecycle})),
        (None, "seg_cbam", "masks", "run", dict(overrides={**SGD, **exponential})),
        (None, "resnet", "digits", "run", dict(overrides={"optimizer.name": "adamw", **onecycle})),
        (None, "dual_resnet", "shapes", "preflight", {}),
        (None, "resnet", "digits", "preflight", {}),
        (None, "video_convgru", "clips", "preflight", {}),
        (None, "vc_resnet", "shapes", "preflight", {}),
        (None, "seg_cbam", "masks", "preflight", {}),
    ]


HEALTHY_STEPS = 120


def variants() -> list[Variant]:
    """Every benchmark run, named `<id>/<k>-<family>-<dataset>` (healthy: `healthy/<k>-...`)."""
    out, counts = [], {}
    rows = [(e, f, d, m, "run", x) for e, f, d, m, x in _run_variants()]
    rows += [(e, f, d, m, "preflight", x) for e, f, d, m, x in _preflight_variants()]
    rows += [(None, f, d, "healthy", kind, x) for _, f, d, kind, x in _healthy_variants()]
    for expected, family, dataset, magnitude, kind, fields in rows:
        group = expected or f"healthy_{kind}"
        index = counts[group] = counts.get(group, -1) + 1
        out.append(Variant(f"{group}/{index}-{family}-{dataset}", expected, kind, family, dataset, magnitude,
                           index=index, **fields))
    return out


def build_run(variant: Variant, ctx: Context):
    """(config, api keyword arguments) of `variant`."""
    family = {"plain_cnn": "dual_resnet", "gated_cnn": "dual_resnet", "tiny_dual": "dual_resnet"}.get(
        variant.family, variant.family)
    steps = HEALTHY_STEPS if variant.expected is None else STEPS
    config = base_config(family, variant.dataset, ctx, variant.digits, steps)
    for key, value in variant.overrides.items():
        config.update_from_flattened_dict({key: value})
    return config, (variant.api(ctx, config) if variant.api else {})
