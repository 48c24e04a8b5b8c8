"""Curriculum, input pipeline and the trainer: stages, checkpoints, exact resume after SIGKILL, multi-host."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stage1, stage2
from datagen import cli
from kinemask_jax.store import checkpoints as ckpt_lib
from kinemask_jax.training import curriculum, input_pipeline, video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(stage, data_dir, init_from="", **train_overrides):
  c = (stage1 if stage == 1 else stage2).get_config("tiny")
  c.data_dir = data_dir
  c.init_from = init_from
  c.train.update(dict(steps=6, log_every=2, checkpoint_every=3, sample_every=0, stage1_steps=0))
  c.train.update(train_overrides)
  c.curriculum.anneal_steps = 4
  return c


def data_dir_of(dataset_path):
  """The --config.data_dir under which the session's tiny dataset lies (…/kinemask_synth/tiny/<version>)."""
  return os.path.dirname(os.path.dirname(os.path.dirname(dataset_path)))


def read_losses(workdir):
  """Per-step losses; a step logged twice (re-run after a resume) keeps its last value."""
  losses = {}
  with open(os.path.join(workdir, "losses.jsonl")) as f:
    for line in f:
      entry = json.loads(line)
      losses[entry["step"]] = entry["loss"]
  return losses


def test_curriculum_schedule():
  t = 8
  ks = [int(curriculum.scheduled_k(s, t, 2, 70)) for s in (0, 10, 35, 69, 70, 1000)]
  assert ks[0] == t and ks[-2] == 1 and ks[-1] == 1 and ks == sorted(ks, reverse=True) and 1 < ks[2] < t
  assert all(int(curriculum.scheduled_k(s, t, 1, 70)) == t for s in (0, 500))
  key = jax.random.key(0)
  k = curriculum.sample_k(0, key, 4000, t, 2, 70, floor_prob=0.25)
  assert set(np.unique(np.asarray(k))) == {1, t} and abs(float(jnp.mean(k == 1)) - 0.25) < 0.03
  np.testing.assert_array_equal(k, curriculum.sample_k(0, key, 4000, t, 2, 70, floor_prob=0.25))  # pure
  drop_text, drop_mask = curriculum.guidance_dropout(key, 4000, 0.1, 0.3)
  assert abs(float(drop_text.mean()) - 0.1) < 0.02 and abs(float(drop_mask.mean()) - 0.3) < 0.03
  with pytest.raises(ValueError, match="stage"):
    curriculum.scheduled_k(0, t, 3, 10)


def test_model_batch_applies_masks_curriculum_and_dropout(tiny_dataset):
  config = tiny_config(2, data_dir_of(tiny_dataset))
  raw = {k: jnp.asarray(v) for k, v in input_pipeline.first_examples(config, "train", 6, input_pipeline.video_decode(config)).items()}
  assert raw["video"].shape == (6, 8, 32, 32, 3) and raw["text_ids"].shape == (6, 64)
  config.curriculum.update(floor_prob=0.0, drop_text_prob=0.0, drop_mask_prob=0.0)
  batch, metrics = curriculum.model_batch(raw, 2, jax.random.key(0), config)  # halfway: k = ceil(8 - 7/2) = 5
  assert float(metrics["curriculum_k"]) == 5
  np.testing.assert_array_equal(batch["cond"].mask_present, np.repeat([[1] * 5 + [0] * 3], 6, axis=0))
  mask = np.asarray(batch["cond"].velocity_mask)
  assert np.abs(mask[:, 5:]).max() == 0 and np.abs(mask[:, 0]).max() > 0
  # Non-zero mask pixels lie on the controlled object's silhouette only.
  ids, controlled = np.asarray(raw["instance_ids"]), np.asarray(raw["moving_at_start"])
  on = np.abs(mask[:, 0]).sum(-1) > 0
  owner = np.take_along_axis(np.concatenate([np.zeros((6, 1), bool), controlled], 1),
                             ids[:, 0].reshape(6, -1), 1).reshape(on.shape)
  assert (owner[on]).all()
  np.testing.assert_allclose(batch["video"], np.asarray(raw["video"]) / 127.5 - 1, atol=1e-6)
  config.curriculum.update(drop_text_prob=1.0, drop_mask_prob=1.0)
  dropped, _ = curriculum.model_batch(raw, 2, jax.random.key(0), config)
  assert float(jnp.abs(dropped["cond"].velocity_mask).max()) == 0 and (np.asarray(dropped["cond"].text_lengths) == 1).all()


@pytest.mark.slow
def test_stage1_then_stage2_tiny(tiny_dataset, tmp_path):
  data_dir = data_dir_of(tiny_dataset)
  w1, w2 = str(tmp_path / "stage1"), str(tmp_path / "stage2")
  m1 = video.train_and_evaluate(tiny_config(1, data_dir, sample_every=6, num_samples=2, sample_steps=2), w1)
  assert m1["curriculum_k"] == 8 and np.isfinite(m1["loss"])
  assert sorted(os.listdir(os.path.join(w1, "checkpoints"))) == ["3", "6"]
  assert os.path.exists(os.path.join(w1, "samples", "step_0000006.gif"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(w1))
  assert sorted(read_losses(w1)) == list(range(1, 7))

  m2 = video.train_and_evaluate(tiny_config(2, data_dir, init_from=w1), w2)
  assert m2["curriculum_k"] < 8 and np.isfinite(m2["loss"])

  bad = tiny_config(2, data_dir, init_from=w1)
  bad.model.width = 32
  with pytest.raises(video.TrainingError, match="incompatible.*width"):
    video.train_and_evaluate(bad, str(tmp_path / "bad"))
  with pytest.raises(cli.ConfigError, match="config.init_from: no such directory"):  # before any work
    video.train_and_evaluate(tiny_config(2, data_dir, init_from=str(tmp_path / "missing")), str(tmp_path / "bad2"))
  assert not os.path.exists(tmp_path / "bad2")
  with pytest.raises(video.TrainingError, match="no complete checkpoint|no checkpoints"):
    video.train_and_evaluate(tiny_config(2, data_dir, init_from=str(tmp_path)), str(tmp_path / "bad3"))


@pytest.mark.slow
def test_stage2_without_init_from_runs_the_whole_curriculum(tiny_dataset, tmp_path, capsys):
  """The main command's path: a stage-2 config without init_from trains its stage 1 first and starts from it."""
  workdir = str(tmp_path / "main")
  m = video.train_and_evaluate(tiny_config(2, data_dir_of(tiny_dataset), steps=3, stage1_steps=3), workdir)
  assert np.isfinite(m["loss"]) and m["curriculum_k"] < 8
  assert sorted(os.listdir(os.path.join(workdir, "stage1", "checkpoints"))) == ["3"]
  assert sorted(read_losses(os.path.join(workdir, "stage1"))) == [1, 2, 3] and sorted(read_losses(workdir)) == [1, 2, 3]
  stored = ckpt_lib.Checkpoints(workdir, read_only=True).restore_config()[0]
  assert stored["init_from"] == os.path.join(workdir, "stage1") and stored["stage"] == 2
  out = capsys.readouterr().out
  assert "stage 1 of the tiny model" in out and "stage 2 of the tiny model" in out and "after stage 1" not in out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
  config = tiny_config(1, data_dir_of(tiny_dataset), steps=6, checkpoint_every=1)
  config.optim.update(learning_rate=1e30, warmup_steps=1)
  with pytest.raises(video.TrainingError, match="not finite.*last good checkpoint: step"):
    video.train_and_evaluate(config, str(tmp_path))
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
  assert steps and max(steps) < 6


def _train_cmd(workdir, data_dir, steps, extra=()):
  return [sys.executable, "-m", "kinemask_jax.train", "--config=configs/stage1.py:tiny", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", f"--config.train.steps={steps}", "--config.train.checkpoint_every=3",
          "--config.train.sample_every=0", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_losses(tiny_dataset, tmp_path):
  data_dir = data_dir_of(tiny_dataset)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  steps = 12
  whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
  subprocess.run(_train_cmd(whole, data_dir, steps), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

  proc = subprocess.Popen(_train_cmd(killed, data_dir, steps), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  losses_file = os.path.join(killed, "losses.jsonl")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(losses_file) and len(open(losses_file).readlines()) >= 8:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  logged_before = len(open(losses_file).readlines())
  assert logged_before < steps

  out = subprocess.run(_train_cmd(killed, data_dir, steps), cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from" in out.stdout
  a, b = read_losses(whole), read_losses(killed)
  assert sorted(a) == sorted(b) == list(range(1, steps + 1))
  for step in a:
    assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), (step, a[step], b[step])


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_together_and_restore(tiny_dataset, tmp_path):
  """2 processes x 4 simulated CPU devices on one machine: same losses on both, and the checkpoint restores."""
  data_dir = data_dir_of(tiny_dataset)
  workdir = str(tmp_path / "run")
  port = _free_port()

  def launch(steps, port):
    procs = []
    for pid in range(2):
      env = dict(os.environ, JAX_PLATFORMS="cpu",
                 XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
      extra = ["--config.distributed.enabled=True", f"--config.distributed.coordinator_address=localhost:{port}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
               "--config.mesh.shape=(2,4,1)", "--config.train.log_every=1"]
      procs.append(subprocess.Popen(_train_cmd(workdir, data_dir, steps, extra), cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
      assert p.returncode == 0, stderr[-3000:]
    return outs

  def final_losses(outs):
    lines = [line for stdout, _ in outs for line in stdout.splitlines() if line.startswith("final metrics")]
    assert len(lines) == 2, outs
    return [dict(kv.split("=") for kv in line[len("final metrics: "):].split(", "))["loss"] for line in lines]

  outs = launch(3, port)
  first = final_losses(outs)
  assert first[0] == first[1]
  assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))
  outs = launch(4, _free_port())
  assert all("resumed from" in stdout and "at step 3" in stdout for stdout, _ in outs)
  second = final_losses(outs)
  assert second[0] == second[1]
  assert sorted(read_losses(workdir)) == [1, 2, 3, 4]
