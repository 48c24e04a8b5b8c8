"""The data engine's pipeline: batches overlap across threads, yet come out as the single-thread engine makes
them, in seed order; a deadline stops it at a batch boundary; its timings count what it did."""

import threading
import time

import numpy as np

from datagen import engine


def test_pipelined_split_equals_batch_by_batch(tiny_cfg):
  tiny_cfg.batch_size = 3
  timings = engine.Timings()
  got = list(engine.generate_split("test", 8, tiny_cfg, "c", start=1, timings=timings))
  seeds = engine.SPLIT_SEED_BASE["test"] + np.arange(1, 8)
  want = [e for s in (seeds[0:3], seeds[3:6], seeds[6:7]) for e in engine.generate_batch(s, tiny_cfg, "c")]
  assert [int(e["seed"]) for e in got] == list(seeds)
  for a, b in zip(got, want):
    for key in b:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert (timings.videos, timings.batches) == (7, 3)
  assert min(timings.physics_s, timings.render_s, timings.examples_s, timings.prepare_s) > 0
  assert timings.wall_s > 0 and "7 videos" in timings.summary()


def test_next_batch_simulates_while_this_one_becomes_examples(tiny_cfg, monkeypatch):
  """Batch 0's examples are made only once batch 1's simulation has begun: a serial engine would wait here
  for good (the event is never set) and fail."""
  tiny_cfg.batch_size = 2
  second_started = threading.Event()
  real_simulate, real_finish = engine.simulate_prepared, engine.finish_batch
  calls = []

  def simulate(prepared, cfg, backend=None, timings=None):
    calls.append(len(calls))
    if len(calls) == 2:
      second_started.set()
    return real_simulate(prepared, cfg, backend, timings)

  def finish(simulated, cfg, timings=None):
    if int(simulated.scenes[0].seed) == 0:
      assert second_started.wait(timeout=30), "batch 1 did not start simulating while batch 0 was finished"
    return real_finish(simulated, cfg, timings)

  monkeypatch.setattr(engine, "simulate_prepared", simulate)
  monkeypatch.setattr(engine, "finish_batch", finish)
  assert [int(e["seed"]) for e in engine.generate_split("train", 6, tiny_cfg, "c")] == list(range(6))
  assert len(calls) == 3


def test_deadline_stops_at_a_batch_boundary(tiny_cfg):
  tiny_cfg.batch_size = 2
  timings = engine.Timings()
  got = list(engine.generate_split("train", 8, tiny_cfg, "c", timings=timings, deadline=time.perf_counter()))
  assert [int(e["seed"]) for e in got] == [0, 1]  # the first batch always runs; none starts after the deadline
  assert timings.batches == 1
