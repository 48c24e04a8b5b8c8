"""Quality regression of the shipped tiny weights: on fixed held-out scenes their videos must track the pushed
object better than copying the first frame does. A change that breaks the model (conditioning, sampler,
tracker, data engine) turns this red."""

import numpy as np

from datagen import engine
from kinemask_jax import KineMaskPipeline
from kinemask_jax.evaluation import baselines, metrics, score

NUM_SCENES = 24


def test_shipped_tiny_weights_beat_copying_the_first_frame():
  pipe = KineMaskPipeline.from_pretrained("tiny")
  examples = [e for e in engine.generate_split("test", 2 * NUM_SCENES, pipe.config.data, "c")
              if score.controlled_objects(e)][:NUM_SCENES]
  inputs = [score.generation_inputs(e) for e in examples]
  videos = pipe.generate([i[0] for i in inputs], [i[1] for i in inputs], [i[2] for i in inputs], prompt=None,
                         seed=0).video
  threshold = 0.04 * pipe.video_shape[2]
  ours = metrics.summarize([metrics.score_video(v, e, threshold) for v, e in zip(videos, examples)])
  copy = metrics.summarize([metrics.score_video(baselines.copy_first_frame(e), e, threshold) for e in examples])
  assert all(np.array_equal(v[0], i[0]) for v, i in zip(videos, inputs))  # frame 0 is the input image
  assert ours["motion_error_px"] < copy["motion_error_px"] - 0.5, (ours["motion_error_px"], copy["motion_error_px"])
  assert ours["interaction_f1"] > 0.2 and ours["vanished_fraction"] < 0.3, ours
