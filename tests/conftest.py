import atexit
import os
import shutil
import sys
import tempfile

import pytest

# One persistent XLA compilation cache for the run, inherited by the processes the tests start (trainer,
# evaluation, demo): many tests compile the same tiny programs, and on 2 cores compiling is most of their
# time. A fresh directory per run (removed at exit), so nothing carries over between runs; a
# JAX_COMPILATION_CACHE_DIR already set is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="kinemask_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# Most tests compile far more than they compute: XLA's CPU backend at optimisation level 0 (LLVM's) compiles
# about a third faster (MJX collision: 8 s against 11.5 s a call) and runs the tests' tiny programs about as
# fast; the suite took 709 s against 782 s. Inherited by the processes the tests start, except through
# `default_xla_env` (for the few that mostly compute); an optimisation level already in XLA_FLAGS is kept.
_CALLER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _CALLER_XLA_FLAGS:
  os.environ["XLA_FLAGS"] = (_CALLER_XLA_FLAGS + " --xla_backend_optimization_level=0").strip()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import data as data_configs  # noqa: E402


@pytest.fixture
def default_xla_env():
  """os.environ for a subprocess that computes more than it compiles: XLA_FLAGS as the caller gave them."""
  return dict(os.environ, XLA_FLAGS=_CALLER_XLA_FLAGS)


@pytest.fixture
def tiny_cfg():
  return data_configs.get_config("tiny")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
  """A generated tiny dataset (6 train examples), shared by the dataset tests."""
  from datagen import generate
  out = str(tmp_path_factory.mktemp("data"))
  cfg = data_configs.get_config("tiny")
  cfg.batch_size = 8
  return generate.generate(cfg, out, 6, backend="c")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory):
  """A tiny stage-2 workdir trained for 2 steps on the session's tiny dataset (API and evaluation tests)."""
  from configs import stage2
  from kinemask_jax.training import video
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  c = stage2.get_config("tiny")
  c.data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset)))
  c.train.update(dict(steps=2, log_every=1, checkpoint_every=2, sample_every=0, stage1_steps=0))
  video.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope="session")
def tiny_examples(tiny_dataset):
  """Every example of the session's tiny dataset (all splits) as dicts of numpy arrays."""
  import numpy as np
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(tiny_dataset)
  out = []
  for split in ("train", "validation", "test"):
    source = builder.as_data_source(split)
    out.extend({k: (v.decode() if isinstance(v, bytes) else np.asarray(v)) for k, v in source[i].items()}
               for i in range(len(source)))
  return out


@pytest.fixture(scope="session")
def tiny_describer(tiny_dataset, tmp_path_factory):
  """An outcome predictor trained to fit the session's 6 tiny train videos; returns (workdir, test scores)."""
  from configs import outcome as outcome_configs
  from kinemask_jax.training import outcome as training
  workdir = str(tmp_path_factory.mktemp("tiny_describer"))
  c = outcome_configs.get_config("tiny")
  c.data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset)))
  c.batch_size = 6
  c.train.update(steps=200, log_every=50, checkpoint_every=100)
  return workdir, training.train_and_evaluate(c, workdir)
