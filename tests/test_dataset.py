import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import data as data_configs
from datagen import captions
from datagen import engine
from datagen import generate
from datagen import kinemask_synth
from datagen import palette, scenes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_READ_WITHOUT_TF = r"""
import sys
import grain
import tensorflow_datasets as tfds
source = tfds.builder_from_directory(sys.argv[1]).as_data_source("train")
ds = grain.MapDataset.source(source).shuffle(seed=0).batch(2)
batch = ds[0]
print(len(source), batch["video"].shape, batch["video"].dtype, batch["instance_ids"].shape, batch["depth"].dtype)
print("tensorflow imported:", any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules))
"""


def test_reads_back_through_grain_without_tensorflow(tiny_dataset):
  out = subprocess.run([sys.executable, "-c", _READ_WITHOUT_TF, tiny_dataset], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().split("\n")
  assert lines[-2] == "6 (2, 8, 32, 32, 3) uint8 (2, 8, 32, 32) float16"
  assert lines[-1] == "tensorflow imported: False"


def test_examples_follow_the_contract(tiny_dataset):
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(tiny_dataset)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 6, "validation": 1, "test": 1}
  source = builder.as_data_source("train")
  seeds = sorted(int(source[i]["seed"]) for i in range(len(source)))
  assert seeds == list(range(6))
  assert int(builder.as_data_source("test")[0]["seed"]) == kinemask_synth.SPLIT_SEED_BASE["test"]
  for i in range(len(source)):
    ex = source[i]
    n = int(ex["num_objects"])
    assert ex["video"].shape == (8, 32, 32, 3) and ex["instance_ids"].max() <= n
    assert np.all(ex["shape"][n:] == -1) and np.all(ex["shape"][:n] >= 0)
    # the controlled objects are the only ones moving at frame 0
    speed = np.linalg.norm(ex["velocity_cam"][0], axis=-1)
    np.testing.assert_array_equal(speed > 1e-6, ex["moving_at_start"])
    # camera-frame velocity is the world velocity rotated by the extrinsics
    rot = ex["camera_extrinsics"][:, :3]
    assert np.all(np.abs(np.linalg.det(rot) - 1) < 1e-5)
    # centroids of visible objects are the centroids of their instance-id pixels
    for t in range(8):
      for k in range(n):
        if ex["visible"][t, k]:
          ys, xs = np.nonzero(ex["instance_ids"][t] == k + 1)
          np.testing.assert_allclose(ex["centroid_px"][t, k], [xs.mean() + 0.5, ys.mean() + 0.5], atol=1e-4)
    rows = ex["collisions"][ex["collisions"][:, 0] >= 0]
    assert np.all(np.diff(rows[:, 0]) >= 0) and np.all(rows[:, 1] < rows[:, 2]) and np.all(rows[:, 1] >= 1)
    mover = int(np.flatnonzero(ex["moving_at_start"])[0])
    caption = ex["caption"].decode()
    assert caption[0].isupper() and caption.endswith(".")
    # the caption's first object is the controlled one, named by the palette entry nearest its RGB
    names = palette.color_names(ex["color"][: int(ex["num_objects"])])
    assert captions.parse_caption(caption, names).mover == mover, (caption, names)


def test_same_seed_bit_identical_examples(tiny_cfg):
  tiny_cfg.batch_size = 4
  a = engine.generate_batch([3, 4], tiny_cfg, backend="c")
  b = engine.generate_batch([4, 3], tiny_cfg, backend="c")
  for key in a[0]:
    np.testing.assert_array_equal(a[0][key], b[1][key], err_msg=key)
    np.testing.assert_array_equal(a[1][key], b[0][key], err_msg=key)


def test_events_and_caption_agree(tiny_cfg):
  tiny_cfg.batch_size = 16
  examples = engine.generate_batch(range(16), tiny_cfg, backend="c")
  with_hit = 0
  for ex in examples:
    rows = ex["collisions"][ex["collisions"][:, 0] >= 0]
    mover = int(np.flatnonzero(ex["moving_at_start"])[0]) + 1
    hits = [int(b if a == mover else a) for _, a, b in rows if mover in (a, b)]
    names = palette.color_names(ex["color"][: int(ex["num_objects"])])
    outcome = captions.parse_caption(ex["caption"], names)
    # The caption names the objects the mover hits, in the order of the collision events.
    assert [k + 1 for k in outcome.hits] == hits, (ex["caption"], hits)
    if hits:
      with_hit += 1
    fell = ex["fell"][: int(ex["num_objects"])]
    for k, f in enumerate(fell):
      if f >= 0:
        assert ex["position"][f, k, 2] < 0 and np.all(ex["position"][:f, k, 2] >= 0)
  assert with_hit >= 8


def test_direction_names():
  assert captions.direction_name(np.array([1.0, 0, 0])) == "to the right"
  assert captions.direction_name(np.array([-1.0, 0, 0.1])) == "to the left"
  assert captions.direction_name(np.array([0.0, 0, 1.0])) == "away from the camera"
  assert captions.direction_name(np.array([0.7, 0, -0.7])) == "towards the camera and to the right"


def test_interrupted_generation_never_looks_complete(tiny_cfg, tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  tiny_cfg.batch_size = 4
  real = engine.simulate_prepared
  calls = []

  def failing(prepared, cfg, backend=None, timings=None):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt("simulated interruption")
    return real(prepared, cfg, backend, timings)

  monkeypatch.setattr(engine, "simulate_prepared", failing)
  with pytest.raises(KeyboardInterrupt):
    generate.generate(tiny_cfg, str(tmp_path), 8, backend="c")
  target = generate.dataset_dir(str(tmp_path), "tiny")
  assert not os.path.exists(os.path.join(target, "dataset_info.json"))
  with pytest.raises(Exception):
    tfds.builder_from_directory(target)
  monkeypatch.setattr(engine, "simulate_prepared", real)
  assert generate.generate(tiny_cfg, str(tmp_path), 8, backend="c") == target
  leftovers = [p for p in os.listdir(os.path.dirname(target)) if "incomplete" in p]
  assert not leftovers
  assert tfds.builder_from_directory(target).info.splits["train"].num_examples == 8


def test_cli_rejects_bad_config_before_any_work(tmp_path):
  out = tmp_path / "never"
  proc = subprocess.run([sys.executable, "-m", "datagen.generate", "--config=configs/data.py:tiny",
                         "--config.scene.min_objects=0", f"--out={out}", "--num=2"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "config.scene.min_objects" in proc.stderr
  assert not out.exists()


def test_preview_writes_a_contact_sheet(tiny_dataset, tmp_path):
  from datagen import preview
  sheet = preview.contact_sheet(os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset))), num=2, scale=2)
  # two videos: caption strip, frames, ids, arrows, spacer each; 8 frames of 64 px across
  assert sheet.size == (8 * 64, 2 * (18 + 3 * 64 + 6))
  assert np.asarray(sheet).std() > 10


def test_caption_round_trip(tiny_cfg):
  """parse(render(outcome)) == outcome over random outcomes, every template and synonym."""
  rng = np.random.default_rng(0)
  templates = set()
  for seed in range(120):
    scene = scenes.sample_scene(seed, tiny_cfg)
    others = list(rng.permutation(np.arange(1, scene.num_objects)))
    hits = tuple(int(k) for k in others[: seed % scene.num_objects])
    fates = tuple(str(rng.choice(list(captions.FATES))) for _ in hits)
    outcome = captions.Outcome(0, str(rng.choice(captions.DIRECTIONS)), hits, fates,
                               str(rng.choice(["falls", "stops", "moves"])))
    for _ in range(3):
      text = captions.render_caption(outcome, scene, rng)
      templates.add(text.split()[0])
      assert captions.parse_caption(text, scene.color_name) == outcome, text
  assert templates == {"A", "An", "The", "Pushed"}
  with pytest.raises(captions.CaptionParseError, match="colour"):
    captions.parse_caption("A zebra walks by.", ("red", "blue"))
  with pytest.raises(captions.CaptionParseError, match="fate"):
    captions.parse_caption("A red cube slides to the left and hits a blue ball.", ("red", "blue"))


def test_a_dataset_knows_the_config_it_was_built_from(tiny_dataset, tmp_path):
  """The data config is stored with the dataset; a trainer or an evaluation asking for other data is told
  which fields differ, and an evaluation never generates a missing dataset unless asked to."""
  from configs import stage2
  from datagen import datasets
  from kinemask_jax.evaluation import score
  stored = generate.stored_config(tiny_dataset)
  assert stored["name"] == "tiny" and stored["scene"]["max_objects"] == 6
  config = stage2.get_config("tiny")
  config.data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset)))
  config.data.batch_size = 3  # how the engine batches scenes: not what the dataset holds
  assert datasets.ensure_dataset(config) == tiny_dataset
  config.data.scene.max_objects = 4
  config.data.render.ambient = 0.5
  with pytest.raises(generate.DatasetMismatch, match=r"render\.ambient: dataset 0\.35, asked 0\.5; scene\.max_objects: dataset 6, asked 4"):
    datasets.ensure_dataset(config)
  with pytest.raises(generate.DatasetMismatch, match=r"render\.ambient: dataset 0\.35, asked 0\.5"):
    score.load_examples(config, "test", 1)
  config.data_dir = str(tmp_path / "none")
  with pytest.raises(score.DatasetMissing, match="generate_missing=True"):
    score.load_examples(config, "test", 1)
  assert not os.path.exists(tmp_path / "none")


def test_evaluation_reads_a_split_in_seed_order_from_tfds_and_from_the_engine(tiny_dataset):
  """TFDS stores a split in its own record order; the evaluation takes the first examples in seed order
  either way, so a subset (and the noise each example gets, `seed + i`) does not depend on the path."""
  from configs import stage2
  from kinemask_jax.evaluation import score
  config = stage2.get_config("tiny")
  config.data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset)))
  source = tfds.builder_from_directory(tiny_dataset).as_data_source("train")
  stored = [int(source[i]["seed"]) for i in range(len(source))]
  assert stored != sorted(stored)  # otherwise this test could not tell the orders apart
  from_tfds = score.load_examples(config, "train", 3)
  from_engine = score.load_examples(config, "train", 3, in_memory=True)
  seeds = [int(e["seed"]) for e in from_tfds]
  assert seeds == sorted(seeds) and seeds == [int(e["seed"]) for e in from_engine]
  for a, b in zip(from_tfds, from_engine):
    np.testing.assert_array_equal(a["video"], b["video"])


def test_a_second_generator_on_the_same_dataset_stops_without_touching_it(tiny_cfg, tmp_path):
  out = str(tmp_path)
  with generate.writing_lock(out, "tiny"):
    unfinished = tmp_path / "kinemask_synth" / "tiny" / "incomplete.first_run"
    unfinished.mkdir()
    with pytest.raises(generate.DatasetBusy, match=f"another generator \\(pid {os.getpid()}"):
      generate.generate(tiny_cfg, out, 2, backend="c")
    assert unfinished.exists()  # the first generator's work is left alone
  unfinished.rmdir()
  tiny_cfg.batch_size = 4
  assert os.path.exists(os.path.join(generate.generate(tiny_cfg, out, 2, backend="c"), "metadata.json"))


def test_tfds_entry_points_find_the_built_dataset(tiny_dataset, tmp_path):
  """After `import datagen.kinemask_synth`, tfds.builder / tfds.load / tfds.data_source find a dataset that
  datagen.generate wrote, by name and size; the generation parameters are its BuilderConfig; an edited data
  config reads back with its own features."""
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset)))
  builder = tfds.builder("kinemask_synth/tiny", data_dir=data_dir)
  assert isinstance(builder.builder_config, kinemask_synth.KinemaskSynthConfig)
  assert builder.builder_config.data_config.num_frames == 8 and builder.builder_config.num_train == 2048
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 6, "validation": 1, "test": 1}
  source = tfds.builder_from_directory(tiny_dataset).as_data_source("train")
  via_tf = next(iter(tfds.load("kinemask_synth/tiny", data_dir=data_dir, split="train")))
  np.testing.assert_array_equal(via_tf["video"].numpy(), source[0]["video"])
  assert via_tf["caption"].numpy() == source[0]["caption"]
  assert len(tfds.data_source("kinemask_synth/tiny", data_dir=data_dir, split="train")) == 6
  # An edited data config is a variant of its size: same name and folder, its own features.
  cfg = data_configs.get_config("tiny")
  cfg.scene.max_objects = 4
  generate.generate(cfg, str(tmp_path), 2, backend="c")
  variant = tfds.builder("kinemask_synth/tiny", data_dir=str(tmp_path))
  assert variant.info.features["shape"].shape == (4,)
  assert variant.as_data_source("train")[1]["shape"].shape == (4,)
