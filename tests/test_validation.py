"""Bad input is one line and exit status 2, before any data is read or anything compiled; the workdir and its
checkpoints stay as they were. The CLI cases run `main.cli()` in this process (flags parsed as on the command
line, `SystemExit` caught); one case runs `python main.py` as a subprocess to check the real exit status."""

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from configs import test as test_config
from tests.conftest import main_in_process
from visioncore_jax.data import build_input
from visioncore_jax.errors import InputError
from visioncore_jax.train.validation import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`python main.py *argv` in this process: (exit status, stderr)."""
    code, _, stderr = main_in_process(argv)
    return code, stderr


def tree_hash(root: str) -> str:
    """A hash of every path and file content under `root`."""
    digest = hashlib.sha256()
    for parent, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(parent, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def make_workdir(root) -> str:
    """A workdir as a previous run leaves it: config, events, a checkpoint tree."""
    workdir = root / "workdir"
    for path, content in {"config.json": "{}", "events.out.tfevents.1": "events",
                          "checkpoints/6/state/_METADATA": "{}", "checkpoints/6/state/d/0": "array bytes",
                          "checkpoints/6/loop/metadata": "{}"}.items():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text(content)
    return str(workdir)


def write_image_folder(root, classes=("a", "b"), eval_classes=None, per_class=2) -> str:
    """`root/{train,test}/<class>/<i>.png` with tiny random RGB images."""
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("test", eval_classes or classes)):
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(root / split / name / f"{i}.png")
    return str(root)


def _folder_with(tmp_path, change) -> str:
    root = write_image_folder(tmp_path / "folder")
    change(tmp_path / "folder")
    return root


FOLDERS = {  # how each image-folder case damages a healthy folder
    "empty_class": lambda root: (root / "train" / "c").mkdir(),
    "eval_only_class": lambda root: write_image_folder(root, eval_classes=("a", "b", "z")),
    "zero_bytes": lambda root: (root / "train" / "a" / "broken.png").write_bytes(b""),
    "random_bytes": lambda root: (root / "test" / "b" / "noise.jpg").write_bytes(os.urandom(300)),
    "truncated": lambda root: (root / "train" / "b" / "cut.png").write_bytes(
        (root / "train" / "b" / "0.png").read_bytes()[:60]),
    "no_eval_split": lambda root: os.rename(root / "test", root / "val"),
}

# (flags after --workdir, expected exit status, a fragment of the last stderr line)
CASES = [
    (["--config.optimizer.learnig_rate=1"], 2,
     "unknown flag --config.optimizer.learnig_rate; did you mean --config.optimizer.learning_rate?"),
    (["--config.optimizer.zzz=1"], 2, "unknown flag --config.optimizer.zzz: config.optimizer has no field 'zzz'"),
    (["--config.optimizer.learning_rate=abc"], 2, "--config.optimizer.learning_rate=abc: could not convert"),
    (["--config.training.batch_size=1.5"], 2, "--config.training.batch_size=1.5"),
    (["--workdr=x"], 2, "Unknown command line flag 'workdr'. Did you mean: workdir ?"),
    (["--config.model.name=dual_resnet", "--config.data.name=embedded_clips"], 2,
     "--config.model.name='dual_resnet' does not fit the clips [T, H, W, 3] of --config.data.name=embedded_clips"),
    (["--config.model.name=unet"], 2, "--config.model.name='unet' needs config.model.unet"),
    (["--config.model.name=resnett"], 2, "--config.model.name='resnett' is not one of"),
    (["--config.model.block=basik"], 2, "--config.model.block='basik' is not one of"),
    (["--config.model.dropout=1.0"], 2, "--config.model.dropout=1.0 must be in [0, 1)"),
    (["--config.model.name=resnet", "--config.model.aux_loss_weight=0.5"], 2, "aux_loss_weight=0.5"),
    (["--config.optimizer.name=adamax"], 2, "--config.optimizer.name='adamax' is not one of"),
    (["--config.optimizer.learning_rate=-0.1"], 2, "--config.optimizer.learning_rate=-0.1 must be > 0"),
    (["--config.schedule.name=one_cycle"], 2, "--config.schedule.name='one_cycle' is not one of"),
    (["--config.schedule.warmup_steps=10"], 2, "Set exactly one of --config.schedule.warmup_epochs (0.0)"),
    (["--config.schedule.name=exponential", "--config.schedule.decay_rate=1.5"], 2,
     "--config.schedule.decay_rate=1.5 must be in (0, 1]"),
    (["--config.training.num_epochs=3"], 2, "Set exactly one of --config.training.num_epochs"),
    (["--config.training.batch_size=13"], 2, "batch_size=13 must be a positive multiple of the 2 devices; use e.g. "
                                             "--config.training.batch_size=12"),
    (["--config.training.max_checkpoints_to_keep=0"], 2, "max_checkpoints_to_keep=0 must be >= 1"),
    (["--config.training.class_weighting=sqrt"], 2, "--config.training.class_weighting='sqrt' is not one of"),
    (["--config.training.dtype=float16"], 2, "--config.training.dtype='float16' is not one of"),
    (["--config.plateau.enabled=True", "--config.plateau.metric=eval_mean_dice"], 2,
     "eval_mean_dice is measured on segmentation data only"),
    (["--config.early_stopping.metric=eval_f1"], 2, "--config.early_stopping.metric='eval_f1' is not one of"),
    (["--config.data.name=cifar1000"], 2, "--config.data.name='cifar1000' is not one of"),
    (["--config.data.name=image_folder", "--config.data.image_folder=/nowhere"], 2,
     "--config.data.image_folder='/nowhere' is not a directory"),
    (["--config.data.name=embedded_masks"], 2, "does not fit the segmentation dataset"),
    (["--config.data.name=cifar100", "--config.data.data_dir={tmp}/tfds"], 2,
     "Dataset 'cifar100' is not prepared in {tmp}/tfds and downloading was not asked for"),
    (["folder:empty_class"], 2, "Class folders with no readable image in {tmp}/folder: train/c"),
    (["folder:eval_only_class"], 2, "Classes in {tmp}/folder/test but not in {tmp}/folder/train: z"),
    (["folder:zero_bytes"], 2, "1 image(s) in {tmp}/folder do not decode: {tmp}/folder/train/a/broken.png"),
    (["folder:random_bytes"], 2, "do not decode: {tmp}/folder/test/b/noise.jpg"),
    (["folder:truncated"], 2, "do not decode: {tmp}/folder/train/b/cut.png"),
    (["folder:no_eval_split"], 2, "--config.data.eval_split='test' is not a folder of {tmp}/folder"),
    (["--mode=preflight", "--config.training.eval_batch_size=0"], 2, "eval_batch_size=0 must be a positive"),
    (["--config=configs/nope.py"], 2, "--config=configs/nope.py is not a file"),
    (["--mode=diagnose"], 2, "--mode=diagnose analyzes the records in --workdir with the config they were written "
                             "with; leave --config out."),
    (["--mode=repair"], 2, "--mode=repair repairs the run as {tmp}/workdir/config.json configures it, but --config "
                           "differs in data.crop_padding, data.data_dir, data.download ...: leave --config out"),
    (["--config.diagnostics.repair_eval_split=test[:"], 2,
     "--config.diagnostics.repair_eval_split='test[:' is not a split: use ''"),
    (["--config.diagnostics.repair_eval_split=train[5000:]"], 2,
     "--config.diagnostics.repair_eval_split='train[5000:]' reads from the training split "
     "(--config.data.train_split='train'): name a held-out split, e.g. 'test'."),
]


def test_bad_inputs_are_one_line_and_leave_the_workdir_alone(tmp_path):
    workdir = make_workdir(tmp_path)
    before = tree_hash(workdir)
    start = time.perf_counter()
    for flags_, expected_code, fragment in CASES:
        argv = [f"--workdir={workdir}", "--config=configs/test.py"]
        for flag in flags_:
            if flag.startswith("folder:"):
                root = _folder_with(tmp_path / flag[7:], FOLDERS[flag[7:]])
                argv += ["--config.data.name=image_folder", f"--config.data.image_folder={root}"]
            else:
                argv.append(flag.format(tmp=tmp_path))
        code, stderr = run_cli(argv)
        fragment = fragment.format(tmp=tmp_path / flags_[0][7:] if flags_[0].startswith("folder:") else tmp_path)
        last = stderr.strip().splitlines()[-1]
        assert (code, last.startswith("main.py: error: "), fragment in last) == (expected_code, True, True), \
            (flags_, stderr[-2000:])
        assert tree_hash(workdir) == before, flags_
    assert not os.listdir(tmp_path / "tfds") if (tmp_path / "tfds").exists() else True
    assert time.perf_counter() - start < 10  # 35 cases, none compiles anything


def test_workdir_that_is_a_file_or_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for workdir, fragment in ((blocker, "is a file; pass a directory (new or a previous run's)."),
                              (blocker / "sub", "is not writable (Not a directory); pass a directory you can"),
                              ("/sys/visioncore_workdir", "is not writable (")):
        code, stderr = run_cli([f"--workdir={workdir}", "--config=configs/test.py"])
        assert code == 2 and stderr.strip().splitlines()[-1].startswith(
            f"main.py: error: --workdir={workdir} {fragment}"), stderr
    assert blocker.read_text() == "not a directory"
    code, _ = run_cli([f"--workdir={tmp_path / 'new' / 'run'}", "--config=configs/test.py",
                       "--config.data.name=image_folder", f"--config.data.image_folder={tmp_path}"])
    assert code == 2 and not (tmp_path / "new").exists()  # a run that fails on its input creates no workdir


def test_verbosity_1_adds_the_traceback(tmp_path):
    code, quiet = run_cli([f"--workdir={tmp_path}", "--config=configs/test.py", "--config.optimizer.name=adamax"])
    assert code == 2 and "Traceback" not in quiet
    code, loud = run_cli([f"--workdir={tmp_path}", "--config=configs/test.py", "--config.optimizer.name=adamax",
                          "--verbosity=1"])
    assert code == 2 and "Traceback" in loud and "visioncore_jax.errors.InputError" in loud
    assert loud.strip().splitlines()[-1] == quiet.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_real_command_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "main.py", f"--workdir={tmp_path}", "--config=configs/test.py",
                             "--config.optimizer.learnig_rate=1"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "main.py: error: unknown flag --config.optimizer.learnig_rate; did you mean "
        "--config.optimizer.learning_rate?")
    assert "Traceback" not in result.stderr


def test_skip_corrupt_skips_and_counts_the_undecodable_images(tmp_path, caplog, tfds_data_dir):
    root = write_image_folder(tmp_path, per_class=3)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"")
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "test" / "b" / "Thumbs.db").write_bytes(b"\0")
    config = test_config.get_config()
    config.data.update(name="image_folder", image_folder=root, data_dir=tfds_data_dir, skip_corrupt=True,
                       crop_padding=0)
    validate_config(config)
    with caplog.at_level("INFO"):
        pipeline = build_input(config)
    assert (pipeline.info.num_train_examples, pipeline.info.num_eval_examples) == (6, 6)
    assert pipeline.info.train_label_counts == (3, 3)
    assert "Skipped 1 undecodable images" in caplog.text and "Ignored 2 files" in caplog.text
    batches = list(pipeline.eval_batches(8))
    labels = np.concatenate([batch["label"][batch["mask"] > 0] for batch in batches])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_missing_dataset_fails_fast_and_a_failed_download_leaves_no_directory(tmp_path, monkeypatch):
    config = test_config.get_config()
    config.data.update(name="cifar100", data_dir=str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(InputError, match="--config.data.download=True downloads it"):
        build_input(config)
    assert time.perf_counter() - start < 10 and os.listdir(tmp_path) == []

    def offline(builder, *args, **kwargs):  # as TFDS does offline: directories first, then the network fails
        os.makedirs(os.path.join(builder.data_dir + ".incomplete", "downloads"))
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr("tensorflow_datasets.core.DatasetBuilder.download_and_prepare", offline)
    config.data.download = True
    with pytest.raises(InputError, match="could not be downloaded .ConnectionError: Name or service not known"):
        build_input(config)
    assert os.listdir(tmp_path) == []
