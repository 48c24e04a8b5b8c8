"""Every command-line tool, run as a subprocess, on bad flags and config values: one line naming the flag or
field, exit code 2 (1 for an expected error such as data that does not match), no traceback unless --debug,
and nothing made or loaded before the check."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(ROOT, "examples", "tiny_1.png")  # object at (23, 14); (1, 1) is the floor

# (module, arguments, exit code, what the one line must say). {tmp} is a fresh folder per case.
CASES = {
    "generate --num=0": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=0"], 2,
                         "--num: .* must be >= 1, got 0"),
    "generate timestep 0": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=2",
                                                 "--config.physics.timestep_s=0"], 2, "config.physics.timestep_s: must be > 0"),
    "generate fps 0": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=2",
                                            "--config.fps=0"], 2, "config.fps: must be > 0"),
    "generate height 0": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=2",
                                               "--config.height=0"], 2, "config.height: must be >= 1"),
    "generate engine batch 0": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=2",
                                                     "--config.batch_size=0"], 2, "config.batch_size: must be >= 1"),
    "generate unknown size": ("datagen.generate", ["--config=configs/data.py:huge", "--out={tmp}/d", "--num=2"], 2,
                              "--config=configs/data.py:huge.*unknown size 'huge'"),
    "generate unknown field": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=2",
                                                    "--config.scene.nope=3"], 2, "--config.scene.nope=3: the config has no field 'nope'"),
    "generate unknown field, default config": ("datagen.generate", ["--out={tmp}/d", "--num=2", "--config.nope=3"], 2,
                                               "--config.nope=3: the config has no field 'nope'"),
    "generate --num=abc": ("datagen.generate", ["--config=configs/data.py:tiny", "--out={tmp}/d", "--num=abc"], 2,
                           "--num=abc"),
    "generate no --out": ("datagen.generate", ["--config=configs/data.py:tiny", "--num=2"], 2, "--out"),
    "preview --num=0": ("datagen.preview", ["--data_dir={tmp}", "--num=0"], 2, "--num: must be >= 1, got 0"),
    "preview no dataset": ("datagen.preview", ["--data_dir={tmp}", "--out={tmp}/s.png"], 1, "no complete kinemask_synth"),
    "train checkpoint_every 0": ("kinemask_jax.train", ["--config=configs/stage2.py:tiny", "--workdir={tmp}/w",
                                                        "--config.train.checkpoint_every=0"], 2,
                                 "config.train.checkpoint_every: must be >= 1, got 0"),
    "train batch 0": ("kinemask_jax.train", ["--config=configs/stage2.py:tiny", "--workdir={tmp}/w",
                                             "--config.batch_size=0"], 2, "config.batch_size: must be >= 1, got 0"),
    "train log_every 0": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                                 "--config.train.log_every=0"], 2, "config.train.log_every"),
    "train patch": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                           "--config.model.patch=(3,4,4)"], 2, "config.model.patch: .* must divide"),
    "train heads": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                           "--config.model.heads=5"], 2, "config.model.heads: must divide"),
    "train timestep": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                              "--config.data.physics.timestep_s=0.003"], 2,
                       "config.data.physics.timestep_s: the frame interval"),
    "train object_weight": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                                   "--config.diffusion.object_weight=-1"], 2,
                            "config.diffusion.object_weight: must be >= 0"),
    "train flow_weight": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                                 "--config.diffusion.flow_weight=-2"], 2,
                          "config.diffusion.flow_weight: must be >= 0"),
    "train flow_background_weight": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                                            "--config.diffusion.flow_background_weight=-0.5"], 2,
                                     "config.diffusion.flow_background_weight: must be >= 0"),
    "train flow_other_weight": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                                       "--config.diffusion.flow_other_weight=-1"], 2,
                                "config.diffusion.flow_other_weight: must be >= 0"),
    "train flow_loss": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                               "--config.diffusion.flow_loss=l1"], 2,
                        r"config.diffusion.flow_loss: must be one of \('squared', 'abs'\), got 'l1'"),
    "train stage": ("kinemask_jax.train", ["--config=configs/stage1.py:tiny", "--workdir={tmp}/w",
                                           "--config.stage=3"], 2, "config.stage: must be 1 or 2"),
    "train init_from": ("kinemask_jax.train", ["--config=configs/stage2.py:tiny", "--workdir={tmp}/w",
                                               "--config.init_from={tmp}/nope"], 2, "config.init_from: no such directory"),
    "train unknown field, default config": ("kinemask_jax.train", ["--workdir={tmp}/w", "--config.nope=0"], 2,
                                            "--config.nope=0: the config has no field 'nope'"),
    "train extra argument": ("kinemask_jax.train", ["--workdir={tmp}/w", "stray"], 2, "unexpected arguments"),
    "sample --velocity=fast": ("kinemask_jax.sample", ["--pretrained=tiny", f"--image={IMAGE}", "--point=23,14",
                                                       "--velocity=fast", "--out={tmp}/o.gif"], 2,
                               "--velocity=fast: expected 2 or 3"),
    "sample point on the floor": ("kinemask_jax.sample", ["--pretrained=tiny", f"--image={IMAGE}", "--point=1,1",
                                                          "--velocity=1,0", "--out={tmp}/o.gif"], 2,
                                  "--point=1,1: .*table, floor or background"),
    "sample unwritable --out": ("kinemask_jax.sample", ["--pretrained=tiny", f"--image={IMAGE}", "--point=23,14",
                                                        "--velocity=1,0", "--out={tmp}/file.txt/o.gif"], 2,
                                "--out=.*cannot make its folder"),
    "sample --num_steps=0": ("kinemask_jax.sample", ["--pretrained=tiny", f"--image={IMAGE}", "--point=23,14",
                                                     "--velocity=1,0", "--num_steps=0", "--out={tmp}/o.gif"], 2,
                             "--num_steps: must be >= 1"),
    "sample unknown weights": ("kinemask_jax.sample", ["--pretrained=huge", f"--image={IMAGE}", "--point=23,14",
                                                       "--velocity=1,0", "--out={tmp}/o.gif"], 2, "--pretrained=huge"),
    "sample too fast": ("kinemask_jax.sample", ["--pretrained=tiny", f"--image={IMAGE}", "--point=23,14",
                                                "--velocity=9,0", "--num_steps=1", "--out={tmp}/o.gif"], 2,
                        "--velocity: velocity: .*beyond the model's range"),
    "evaluate --num=0": ("kinemask_jax.evaluate", ["--pretrained=tiny", "--out={tmp}/e", "--num=0"], 2,
                         "--num: must be >= 1"),
    "evaluate one speed": ("kinemask_jax.evaluate", ["--pretrained=tiny", "--out={tmp}/e",
                                                     "--config.causality.speeds_mps=(1.0,)"], 2,
                           "config.causality.speeds_mps: expected at least 2"),
    "evaluate auto prompt without describer": ("kinemask_jax.evaluate", ["--pretrained=tiny", "--out={tmp}/e",
                                                                         "--config.prompt=auto"], 2, "config.describer"),
    "evaluate batch 0": ("kinemask_jax.evaluate", ["--pretrained=tiny", "--out={tmp}/e", "--config.batch_size=0"], 2,
                         "config.batch_size: must be >= 1"),
    "evaluate missing dataset": ("kinemask_jax.evaluate", ["--pretrained=tiny", "--out={tmp}/e",
                                                           "--config.data_dir={tmp}/none"], 1,
                                 "no dataset at .*generate_missing=True"),
    "train_outcome batch 0": ("kinemask_jax.train_outcome", ["--config=configs/outcome.py:tiny", "--workdir={tmp}/w",
                                                   "--config.batch_size=0"], 2, "config.batch_size: must be >= 1"),
    "export no workdir": ("kinemask_jax.export", ["--workdir={tmp}/nope", "--out={tmp}/x"], 2,
                           "--workdir=.*no such directory"),
    "export dtype": ("kinemask_jax.export", ["--workdir={tmp}", "--out={tmp}/x", "--dtype=int8"], 2, "--dtype"),
    "express minutes": ("kinemask_jax.express", ["--out={tmp}/x", "--minutes=0"], 2, "--minutes: must be positive"),
    "express config": ("kinemask_jax.express", ["--out={tmp}/x", "--config=configs/stage2.py:tiny",
                                                "--config.train.log_every=0"], 2, "config.train.log_every"),
}


def run_cli(module, args, tmp_path, extra_env=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(extra_env or {}))
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def assert_one_line_error(proc, code, pattern):
  import re
  assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert re.search(pattern, errors[0]), errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_line(case, tmp_path):
  module, args, code, pattern = CASES[case]
  (tmp_path / "file.txt").write_text("not a folder")
  proc = run_cli(module, args, tmp_path)
  assert_one_line_error(proc, code, pattern)
  # Checked before any work: no workdir, dataset or output folder was made.
  made = sorted(p.name for p in tmp_path.iterdir())
  assert made == ["file.txt"], made


def test_debug_shows_the_traceback(tmp_path):
  proc = run_cli("kinemask_jax.train", ["--config=configs/stage2.py:tiny", "--workdir={tmp}/w",
                                        "--config.train.checkpoint_every=0", "--debug"], tmp_path)
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "config.train.checkpoint_every" in proc.stderr


def test_generate_refuses_to_return_another_dataset(tiny_dataset, tmp_path):
  """A rerun on an existing dataset with another config or --num names the differing fields and exits 1;
  the same config (engine batch aside: it changes how, not what) finds it complete."""
  out = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset)))
  base = ["--config=configs/data.py:tiny", f"--out={out}"]
  proc = run_cli("datagen.generate", base + ["--num=6", "--config.scene.max_objects=3"], tmp_path)
  assert_one_line_error(proc, 1, "holds another dataset .*scene.max_objects: dataset 6, asked 3")
  proc = run_cli("datagen.generate", base + ["--num=7"], tmp_path)
  assert_one_line_error(proc, 1, r"--num \(train examples\): dataset 6, asked 7")
  proc = run_cli("datagen.generate", base + ["--num=6", "--config.batch_size=8"], tmp_path)
  assert proc.returncode == 0 and "already complete" in proc.stdout, proc.stderr[-2000:]
