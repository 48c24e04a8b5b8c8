import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import data as data_configs  # noqa: E402


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
