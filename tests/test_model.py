"""Video DiT, ControlNet, text path, velocity masks, diffusion and the train step, at tiny sizes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import data as data_configs
from configs import model as model_configs
from datagen import captions, scenes
from kinemask_jax.model import conditioning, diffusion, text, velocity_mask as vm
from kinemask_jax.training import trainer as step_lib, video
from kinemask_jax.model import cost, dit

VOCABULARY = model_configs.get_config("tiny").model.text.vocabulary  # the caption grammar's words

B, T, H, W = 2, 8, 32, 32


def tiny(**model_overrides):
  c = model_configs.get_config("tiny")
  c.model.update(model_overrides)
  return c


def make_batch(seed=0, b=B, t=T, h=H, w=W, smooth=True):
  """A batch of moving-blob videos with non-trivial masks and captions."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  video = np.full((b, t, h, w, 3), -0.5, np.float32)
  for i, f in itertools.product(range(b), range(t)):
    cx, cy = 6 + 2 * f + 3 * i, h / 2
    video[i, f, ..., i % 3] += 1.2 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 20.0)
  if not smooth:
    video = rng.uniform(-1, 1, video.shape).astype(np.float32)
  ids, lens = text.Tokenizer(64, VOCABULARY).encode_batch(["a red ball rolls to the right and hits a blue cube"] * b)
  video = jnp.asarray(video)
  cond = conditioning.Condition(video[:, 0], jnp.asarray(rng.uniform(-1, 1, (b, t, h, w, 3)), jnp.float32),
                                jnp.ones((b, t)), jnp.asarray(ids), jnp.asarray(lens))
  return dict(video=video, cond=cond)


def condition(batch):
  return batch["cond"]


def perturb(state, scale=0.05, seed=0, skip=lambda path: False):
  """Random values in every parameter (except those whose path `skip` accepts) so zero-init is broken."""
  leaves = jax.tree_util.tree_leaves_with_path(state)
  keys = iter(jax.random.split(jax.random.key(seed), len(leaves)))
  def one(path, x):
    k = next(keys)
    return x if skip(jax.tree_util.keystr(path)) else x + scale * jax.random.normal(k, x.shape, x.dtype)
  return jax.tree_util.tree_map_with_path(one, state)


# --- text ---------------------------------------------------------------------------------------------------

def test_tokenizer_covers_every_caption_word_and_maps_unknown_words():
  tok = text.Tokenizer(64, VOCABULARY)
  cfg = data_configs.get_config("tiny")
  rng = np.random.default_rng(0)
  for seed in range(30):
    scene = scenes.sample_scene(seed, cfg)
    n = scene.num_objects
    hits = tuple(range(1, n))[: 1 + seed % 3]
    fates = tuple(list(captions.FATES)[(seed + j) % len(captions.FATES)] for j in range(len(hits)))
    for outcome in (captions.Outcome(0, captions.DIRECTIONS[seed % 8], hits, fates, ("falls", "stops", "moves")[seed % 3]),
                    captions.Outcome(0, captions.DIRECTIONS[seed % 8], (), (), ("falls", "stops", "moves")[seed % 3])):
      caption = captions.render_caption(outcome, scene, rng)
      ids, length = tok.encode(caption)
      assert tok.unk_id not in ids[:length], caption
      assert tok.decode(ids, length) == " ".join(text.words(caption))
  ids, length = tok.encode("A zebra hits the red cube!")
  assert length == 7 and ids[0] == 1 and ids[2] == tok.unk_id and (ids[length:] == 0).all()
  ids, length = text.Tokenizer(4, VOCABULARY).encode("a red cube slides to the left")
  assert length == 4 and ids.shape == (4,)
  with pytest.raises(ValueError, match="max_len"):
    text.Tokenizer(1, VOCABULARY)


# --- velocity masks -----------------------------------------------------------------------------------------

def test_velocity_mask_matches_a_per_pixel_reference():
  rng = np.random.default_rng(3)
  t, h, w, n = 3, 6, 7, 4
  ids = rng.integers(0, n + 1, (t, h, w)).astype(np.uint8)
  vel = rng.uniform(-3, 3, (t, n, 3)).astype(np.float32)
  controlled = np.array([True, False, True, False])
  got = np.asarray(vm.velocity_mask(ids, vel, controlled, v_max=2.0))
  want = np.zeros((t, h, w, 3), np.float32)
  for f, y, x in itertools.product(range(t), range(h), range(w)):
    k = ids[f, y, x]
    if k and controlled[k - 1]:
      want[f, y, x] = np.clip(vel[f, k - 1] / 2.0, -1, 1)
  np.testing.assert_allclose(got, want, atol=1e-7)
  assert np.abs(got).max() == 1.0  # speeds above v_max are clipped
  batched = np.asarray(vm.velocity_mask(np.stack([ids, ids]), np.stack([vel, -vel]), np.stack([controlled] * 2), 2.0))
  np.testing.assert_allclose(batched[0], want, atol=1e-7)
  np.testing.assert_allclose(batched[1], -want, atol=1e-7)
  cut, present = vm.keep_first_frames(batched, jnp.array([1, 2]))
  np.testing.assert_array_equal(np.asarray(present), [[1, 0, 0], [1, 1, 0]])
  assert np.abs(np.asarray(cut)[0, 1:]).max() == 0 and np.abs(np.asarray(cut)[1, :2]).max() > 0
  with pytest.raises(ValueError, match="v_max"):
    vm.velocity_mask(ids, vel, controlled, 0.0)
  with pytest.raises(ValueError, match="disagree"):
    vm.velocity_mask(ids, vel[:2], controlled, 1.0)


# --- model structure ----------------------------------------------------------------------------------------

def test_patchify_inverse_and_position_embedding_for_any_grid():
  x = jnp.arange(2 * 4 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 4, 8, 12, 3)
  tokens = dit.patchify(x, (2, 4, 4))
  assert tokens.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
  np.testing.assert_array_equal(dit.unpatchify(tokens, (2, 4, 4), (2, 2, 3), 3), x)
  for grid in [(1, 2, 3), (4, 8, 8), (3, 5, 7)]:
    emb = dit.layers.position_embedding_3d(grid, 64)
    assert emb.shape == (int(np.prod(grid)), 64)
    assert len(np.unique(emb.round(5), axis=0)) == emb.shape[0]  # every position distinct


@pytest.mark.parametrize("overrides", [dict(), dict(attention="factorised"), dict(control="concat"),
                                       dict(control="none")])
def test_forward_shapes(overrides):
  cfg = tiny(**overrides)
  graphdef, state = nnx.split(dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0)))
  predict = jit_predict(graphdef)
  for t, h, w in [(T, H, W), (4, 16, 24)]:
    batch = make_batch(b=1, t=t, h=h, w=w)
    out = predict(state, batch["video"], jnp.array([0.5]), condition(batch))
    assert out.shape == (1, t, h, w, 3) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
  with pytest.raises(ValueError, match="divisible"):
    predict(state, jnp.zeros((1, 3, 32, 32, 3)), jnp.array([0.5]), condition(make_batch(b=1, t=3)))


def test_bad_model_config_is_refused():
  for field, value, match in [("control", "adapter", "model.control"), ("attention", "axial", "model.attention"),
                              ("prediction", "eps", "model.prediction"), ("n_control", 9, "n_control"),
                              ("first_frame", "last", "model.first_frame"), ("output", "residual", "model.output"),
                              ("head", "mlp", "model.head"), ("head_channels", 0, "model.head_channels")]:
    with pytest.raises(ValueError, match=match):
      dit.VideoDiT(tiny(**{field: value}).model, rngs=nnx.Rngs(0))
  for control, n_control in [("none", 2), ("concat", 2), ("controlnet", 0)]:  # no ControlNet block: nothing trains
    with pytest.raises(ValueError, match="model.freeze_backbone"):
      dit.trainable_filter(tiny(control=control, n_control=n_control, freeze_backbone=True).model)
  with pytest.raises(ValueError, match="delta"):
    dit.VideoDiT(tiny(prediction="v").model, rngs=nnx.Rngs(0))


def jit_predict(graphdef):
  return jax.jit(lambda state, x, t, c: diffusion.predict(nnx.merge(graphdef, state), x, t, c))


def test_controlnet_is_zero_initialised():
  """At init the prediction ignores the ControlNet's velocity masks (other parameters made non-trivial); not
  after. (Frame 0's mask also enters the video branch with mask0_all / push_geometry: off here.)"""
  model = dit.VideoDiT(tiny(mask0_all=False, push_geometry=False).model, rngs=nnx.Rngs(0))
  # The ControlNet copy starts from the backbone's weights.
  np.testing.assert_array_equal(model.control_blocks[1].mlp.up.kernel[...], model.blocks[1].mlp.up.kernel[...])
  graphdef, state = nnx.split(model)
  predict = jit_predict(graphdef)
  live = perturb(state, skip=lambda path: "control_proj" in path)
  batch = make_batch()
  cond = condition(batch)
  other_mask = cond.replace(velocity_mask=-cond.velocity_mask, mask_present=jnp.zeros_like(cond.mask_present))
  t = jnp.array([0.3, 0.7])
  a = predict(live, batch["video"], t, cond)
  np.testing.assert_allclose(predict(live, batch["video"], t, other_mask), a, atol=1e-6)
  assert np.abs(np.asarray(predict(live, batch["video"] * 0.5, t, cond) - a)).max() > 1e-3
  trained = perturb(state)
  diff = predict(trained, batch["video"], t, other_mask) - predict(trained, batch["video"], t, cond)
  assert np.abs(np.asarray(diff)).max() > 1e-3


def test_slide_prior_brings_frame_0s_velocity_into_the_video_branch():
  """With no other path for the mask (no ControlNet, no mask0_all, no push geometry), the prediction depends on
  frame 0's velocity only through the slide prior."""
  def predictions(slide_prior):
    cfg = tiny(control="none", mask0_all=False, push_geometry=False, slide_prior=slide_prior).model
    graphdef, state = nnx.split(dit.VideoDiT(cfg, rngs=nnx.Rngs(0)))
    predict, live = jit_predict(graphdef), perturb(state)
    batch = make_batch()
    cond = condition(batch)
    reversed_push = cond.replace(velocity_mask=cond.velocity_mask.at[:, 0].multiply(-1.0))
    t = jnp.array([0.3, 0.7])
    return predict(live, batch["video"], t, cond), predict(live, batch["video"], t, reversed_push)
  a, b = predictions(True)
  assert np.abs(np.asarray(a - b)).max() > 1e-3
  a, b = predictions(False)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_self_conditioning_reads_the_previous_estimate_only_when_on():
  """With model.self_condition the prediction depends on the previous clean-video estimate (none = zeros);
  without it an estimate passed in changes nothing."""
  batch = make_batch()
  cond, x, t = condition(batch), batch["video"] * 0.5, jnp.array([0.3, 0.7])
  estimate = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, x.shape), jnp.float32)
  predictions = {}
  for on in (True, False):
    graphdef, state = nnx.split(dit.VideoDiT(tiny(self_condition=on).model, rngs=nnx.Rngs(0)))
    predict = jax.jit(lambda s, prev, g=graphdef: diffusion.predict(nnx.merge(g, s), x, t, cond, prev))
    live = perturb(state)
    predictions[on] = [np.asarray(predict(live, prev)) for prev in (None, jnp.zeros_like(x), estimate)]
  none, zeros, given = predictions[True]
  np.testing.assert_array_equal(none, zeros)
  assert np.abs(given - zeros).max() > 1e-3
  none, zeros, given = predictions[False]
  np.testing.assert_array_equal(none, given)
  assert (conditioning.image_channels(tiny(self_condition=True).model)
          == conditioning.image_channels(tiny().model) + 3)


class _Refiner:
  """A stand-in self-conditioned x-predicting model: its clean video is the previous estimate plus 0.1."""
  prediction, min_time, self_condition = "x", 0.05, True

  def __call__(self, x_t, t, cond, x0_prev):
    return x0_prev + 0.1


def test_sampler_gives_each_step_the_estimate_of_the_step_before():
  """Euler with n steps on _Refiner ends on 0.1 n (zeros at the first step, then each step's estimate), frame
  0 the given frame; a model without self_condition is called without an estimate (as _Oracle is)."""
  cond = condition(make_batch(b=2, t=4, h=8, w=8))
  for steps in (1, 4, 7):
    out = diffusion.sample(_Refiner(), cond, jax.random.key(0), (2, 4, 8, 8, 3), steps)
    np.testing.assert_allclose(out[:, 1:], 0.1 * steps, atol=1e-5)
    np.testing.assert_array_equal(out[:, 0], np.clip(cond.first_frame, -1, 1))
  target = jnp.full((2, 4, 8, 8, 3), 0.3)
  np.testing.assert_allclose(diffusion.sample(_Oracle(target), cond, jax.random.key(0), target.shape, 3)[:, 1:],
                             0.3, atol=1e-5)


def test_training_self_conditions_half_the_batches_without_gradient_through_the_estimate():
  """self_condition_input: zeros or the model's own estimate (one draw per batch, about half of each over 64
  draws), None for a model without self_condition; no gradient flows through the estimate."""
  class Scaled:
    prediction, min_time, self_condition = "x", 0.05, True

    def __init__(self, a):
      self.a = a

    def __call__(self, x_t, t, cond, x0_prev):
      return self.a * x_t + x0_prev

  cond = condition(make_batch(b=2, t=4, h=8, w=8))
  x_t = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 4, 8, 8, 3)), jnp.float32)
  t = jnp.array([0.4, 0.8])
  keys = jax.random.split(jax.random.key(0), 64)
  draws = [diffusion.self_condition_input(Scaled(2.0), x_t, t, cond, k) for k in keys]
  given = [bool(jnp.abs(d).max() > 0) for d in draws]
  assert 16 <= sum(given) <= 48
  own = diffusion.with_given_frame(x_t, cond) * 2.0
  for d, g in zip(draws, given):
    if g:
      np.testing.assert_allclose(d[:, 1:], own[:, 1:], atol=1e-5)
  assert diffusion.self_condition_input(_Oracle(x_t), x_t, t, cond, jax.random.key(0)) is None
  key = next(k for k, g in zip(keys, given) if g)

  def output(a):
    model = Scaled(a)
    return jnp.sum(model(x_t, t, cond, diffusion.self_condition_input(model, x_t, t, cond, key))[:, 1:])
  np.testing.assert_allclose(jax.grad(output)(1.5), jnp.sum(x_t[:, 1:]), rtol=1e-5)
  seen = []  # the loss gives the model an estimate (zeros or its own) in every call

  class Recorder(Scaled):
    def __call__(self, x_t, t, cond, x0_prev):
      seen.append(x0_prev is not None)
      return super().__call__(x_t, t, cond, jnp.zeros_like(x_t) if x0_prev is None else x0_prev)
  assert np.isfinite(float(diffusion.loss(Recorder(1.0), x_t, cond, key, 0.0, 1.0, "clean")[0]))
  assert len(seen) == 2 and all(seen)  # the first pass (traced once, in lax.cond), then the prediction


def test_guidance_scale_one_is_the_conditional_prediction():
  graphdef, state = nnx.split(dit.VideoDiT(tiny().model, rngs=nnx.Rngs(1)))
  state = perturb(state)
  batch = make_batch()
  cond, x, t = condition(batch), batch["video"], jnp.array([0.2, 0.9])

  @jax.jit
  def velocities(state, x, t, cond):
    model = nnx.merge(graphdef, state)
    return (diffusion.predict(model, x, t, cond),
            diffusion.guided_velocity(model, x, t, cond, 1.0, 1.0, always_batch=True),
            diffusion.guided_velocity(model, x, t, cond, 3.0, 2.0))
  plain, guided, strong = velocities(state, x, t, cond)
  np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(strong - plain)).max() > 1e-3
  dropped = cond.drop(text=jnp.array([True, False]), mask=jnp.array([False, True]))
  assert dropped.text_lengths.tolist() == [1, int(cond.text_lengths[1])]
  assert int(dropped.text_ids[0, 1:].max()) == 0 and int(dropped.text_ids[0, 0]) == 1
  assert float(jnp.abs(dropped.velocity_mask[1]).max()) == 0 and float(dropped.mask_present[1].max()) == 0
  np.testing.assert_array_equal(dropped.velocity_mask[0], cond.velocity_mask[0])


class _Oracle:
  """A stand-in model that always predicts the same clean video (x-prediction)."""
  prediction, min_time = "x", 0.05

  def __init__(self, target):
    self.target = target

  def __call__(self, x_t, t, cond):
    return jnp.broadcast_to(self.target, x_t.shape)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sampler_reaches_the_predicted_video_and_keeps_frame_0(method):
  """Integrating an exact clean-video prediction must end on that video, for any number of steps; frame 0
  is the given first frame exactly, whatever the model says about it."""
  target = jnp.asarray(np.random.default_rng(0).uniform(-0.9, 0.9, (2, 4, 8, 8, 3)), jnp.float32)
  cond = condition(make_batch(b=2, t=4, h=8, w=8))
  for steps in (1, 3, 10):
    out = jax.jit(lambda r: diffusion.sample(_Oracle(target), cond, r, target.shape, steps, method))(jax.random.key(0))
    np.testing.assert_allclose(out[:, 1:], target[:, 1:], atol=1e-5)
    np.testing.assert_array_equal(out[:, 0], np.clip(cond.first_frame, -1, 1))
  grid = diffusion.time_grid(4, shift=3.0)
  assert grid[0] == 1 and grid[-1] == 0 and (np.diff(grid) < 0).all() and grid[2] > 0.5
  with pytest.raises(ValueError, match="method"):
    diffusion.sample(_Oracle(target), cond, jax.random.key(0), target.shape, 2, "rk4")


class _Linear:
  """A stand-in v-predicting model with the linear velocity field v(x, t) = a * x: its Euler and Heun
  integrations have closed forms, step by step."""
  prediction, min_time = "v", 0.05

  def __init__(self, a):
    self.a = a

  def __call__(self, x_t, t, cond):
    return self.a * x_t


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("shift", [1.0, 2.5])
def test_sampler_steps_match_their_closed_form(method, shift):
  """For dx/dt = a x each Euler step multiplies x by (1 - a h) and each Heun step by (1 - a h + (a h)^2 / 2)
  (h = t - t_next; the last step, to t = 0, is Euler): the sampled video must be exactly that product times
  the starting noise, on the shifted time grid, and frame 0 the given frame."""
  a, steps = 0.7, 5
  noise = jnp.asarray(np.random.default_rng(1).uniform(-0.5, 0.5, (2, 4, 8, 8, 3)), jnp.float32)
  cond = condition(make_batch(b=2, t=4, h=8, w=8))
  out = jax.jit(lambda n: diffusion.sample(_Linear(a), cond, None, n.shape, steps, method, shift=shift, noise=n))(noise)
  ts = diffusion.time_grid(steps, shift).astype(np.float64)
  factor = 1.0
  for t, t_next in zip(ts[:-1], ts[1:]):
    h = t - t_next
    factor *= 1 - a * h + ((a * h) ** 2 / 2 if method == "heun" and t_next > 0 else 0.0)
  np.testing.assert_allclose(out[:, 1:], factor * np.asarray(noise[:, 1:], np.float64), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[:, 0], np.clip(cond.first_frame, -1, 1))


class _Branches:
  """A stand-in v-predicting model whose output says which conditions it saw: 1 for the velocity mask,
  10 for the text (so the three guidance branches predict 0, 1 and 11)."""
  prediction, min_time = "v", 0.05

  def __call__(self, x_t, t, cond):
    seen = cond.mask_present.max(axis=1) + 10.0 * (cond.text_lengths > 1)
    return jnp.broadcast_to(seen[:, None, None, None, None], x_t.shape).astype(x_t.dtype)


def test_guidance_combines_the_branches_as_documented():
  """v = v(none) + mask_scale (v(mask) - v(none)) + text_scale (v(mask, text) - v(mask)): with branch values
  0, 1, 11 that is mask_scale + 10 text_scale, for scales other than 1 (where only the full branch counts)."""
  cond = condition(make_batch(b=2, t=4, h=8, w=8))
  x = jnp.zeros((2, 4, 8, 8, 3))
  for text_scale, mask_scale in ((2.0, 3.0), (0.5, 1.0), (1.0, 4.0), (0.0, 0.0), (1.0, 1.0)):
    v = diffusion.guided_velocity(_Branches(), x, jnp.array([0.3, 0.8]), cond, text_scale, mask_scale,
                                  always_batch=True)
    np.testing.assert_allclose(v[:, 1:], mask_scale + 10 * text_scale, rtol=1e-6)
    assert float(jnp.abs(v[:, 0]).max()) == 0.0


# --- cost -------------------------------------------------------------------------------------------------

def test_readme_model_table_is_what_model_info_prints():
  """The README's size table is regenerated from kinemask_jax.model_info, never edited by hand."""
  import os
  from configs import model as model_configs
  rows = [cost.size_summary(model_configs.get_config(s)) for s in model_configs.SIZES]
  readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
  assert cost.format_table(rows) in readme


def test_size_summary_counts_only_the_controlnet_blocks_built():
  """Under control="concat" no ControlNet copy is built, so the summary says 0 blocks, and its parameters
  are the built model's."""
  for control, blocks in (("controlnet", 2), ("concat", 0)):
    cfg = tiny(control=control)
    row = cost.size_summary(cfg)
    model = dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0))
    built = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert (row["n_control"], row["params"]) == (blocks, built), control


def test_flops_count_matches_xla_cost_analysis():
  """The analytic matrix FLOPs are what XLA counts, less the elementwise work (within 15%)."""
  for overrides in (dict(attention="full"), dict(attention="factorised"), dict(head="conv"), dict(output="warp"),
                    dict(output="splat")):
    cfg = tiny(**overrides)
    graphdef, state = nnx.split(dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0)))
    batch = make_batch(b=1)
    fn = jax.jit(lambda s, x, c: diffusion.predict(nnx.merge(graphdef, s), x, jnp.array([0.5]), c))
    analysis = fn.lower(state, batch["video"], condition(batch)).compile().cost_analysis()
    xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    ours = cost.forward_flops(cfg.model, T, H, W)
    assert 0.85 * xla <= ours <= xla, (overrides, ours, xla)
    assert cost.param_count(cfg.model) == sum(x.size for x in jax.tree.leaves(state))  # the conv and warp heads included


# --- training ---------------------------------------------------------------------------------------------

def test_overfits_one_batch():
  """A tiny model memorises one batch (fixed noise and times): the loss falls at least 10x."""
  cfg = tiny()
  cfg.optim.update(learning_rate=3e-3, warmup_steps=10, decay_steps=110, weight_decay=0.0)
  trainer = video.trainer(cfg)
  state = trainer.init(0)
  batch, rng = make_batch(), jax.random.key(1)
  opt = step_lib.make_optimizer(cfg.optim)

  @jax.jit
  def update(params, opt_state):
    loss, grads = jax.value_and_grad(trainer.loss)(params, state.frozen, batch, rng)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, opt_state = state.params, state.opt_state
  losses = []
  for _ in range(120):
    params, opt_state, loss = update(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < losses[0] / 10, losses[::10]


def test_train_step_updates_state_and_freeze_backbone_trains_only_the_controlnet():
  batch = make_batch()
  for freeze in (False, True):
    trainer = video.trainer(tiny(freeze_backbone=freeze))
    state = trainer.init(0)
    if freeze:  # as if the backbone were pretrained: a zero final layer would pass no gradient back
      state = state.replace(frozen=perturb(state.frozen))
    before = jax.tree.map(np.asarray, (state.params, state.frozen))
    step = trainer.jit_step(state, batch)
    state, metrics = step(state, batch)
    state, metrics = step(state, batch)
    assert bool(metrics["finite"]) and float(metrics["loss"]) > 0 and int(state.step) == 2
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
    assert all("control" in p for p in paths) == freeze
    changed = {jax.tree_util.keystr(p) for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(before[0]),
                                                             jax.tree.leaves(state.params)) if not np.array_equal(a, b)}
    # The zero-initialised output layer gets the first gradients; under a (trained) frozen backbone the
    # ControlNet's zero projections do.
    assert any(("control_proj" if freeze else "'final'") in p for p in changed), changed
    for a, b in zip(jax.tree.leaves(before[1]), jax.tree.leaves(state.frozen)):
      np.testing.assert_array_equal(a, b)
    # The EMA moved, but only part of the way from the initial parameters.
    flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    old, new, ema = flat(before[0]), flat(state.params), flat(state.ema)
    for path in changed:
      assert 0 < np.abs(ema[path] - old[path]).max() < np.abs(new[path] - old[path]).max()


def test_non_finite_step_leaves_the_state_unchanged():
  trainer = video.trainer(tiny())
  state = trainer.init(0)
  batch = make_batch()
  batch["video"] = batch["video"].at[0, 1, 0, 0, 0].set(jnp.nan)
  before = jax.tree.map(np.asarray, state.params)
  state, metrics = trainer.jit_step(state, batch)(state, batch)
  assert not bool(metrics["finite"]) and int(state.step) == 0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_train_step_compiled_ahead_from_shapes_is_the_jitted_step():
  # What kinemask_jax/express.py compiles on a helper thread before the data exists: from shapes alone, on
  # the config's mesh, it must step exactly as the step jitted at first use, and refuse another batch shape.
  from kinemask_jax.model import sharding as shd
  trainer = video.trainer(tiny(), shd.make_mesh(tiny().mesh.shape))
  batch = make_batch()
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  ahead = trainer.compile_step(trainer.abstract_state(0), like)
  batch = jax.device_put(batch, trainer.batch_sharding(batch))
  ends = []
  for step_fn in (ahead, None):
    state = trainer.init(0)
    step_fn = step_fn or trainer.jit_step(state, batch)
    for _ in range(2):
      state, metrics = step_fn(state, batch)
    ends.append(jax.tree.map(np.asarray, (state.params, state.ema, metrics["loss"])))
  for a, b in zip(jax.tree.leaves(ends[0]), jax.tree.leaves(ends[1])):
    np.testing.assert_array_equal(a, b)
  with pytest.raises((TypeError, ValueError)):
    ahead(trainer.init(0), jax.tree.map(lambda x: x[:1], batch))


def test_bf16_compute_and_rematerialisation():
  batch = make_batch()
  cond, t = condition(batch), jnp.array([0.4, 0.8])
  graphdef, state = nnx.split(dit.VideoDiT(tiny().model, rngs=nnx.Rngs(0)))
  state = perturb(state)
  ref = diffusion.predict(nnx.merge(graphdef, state), batch["video"], t, cond)
  half_graph = nnx.split(dit.VideoDiT(tiny(dtype="bfloat16").model, rngs=nnx.Rngs(0)))[0]
  half = diffusion.predict(nnx.merge(half_graph, state), batch["video"], t, cond)
  rel = float(jnp.linalg.norm(half - ref) / jnp.linalg.norm(ref))
  assert rel < 3e-2, rel

  def grads(remat):
    trainer = video.trainer(tiny(remat=remat))
    s = trainer.init(0)
    return trainer.jit_loss_and_grads(s, batch)(s, batch, jax.random.key(0))
  (l0, g0), (l1, g1) = grads(False), grads(True)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_conv_head_starts_still_and_reads_each_pixel():
  """head="conv": at init the output is the first frame (a still scene, like the linear head). With the
  transformer's projection silenced and the convolutions made non-zero, a change to one pixel of x_t reaches
  the output through the head alone: in the same frame and at most 2 pixels away (two 3x3 convolutions)."""
  cfg = tiny(head="conv")
  model = dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  batch = make_batch(b=1)
  cond = condition(batch)
  t = jnp.array([0.5])
  out = nnx.merge(graphdef, state)(batch["video"], t, cond)
  assert out.shape == batch["video"].shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, jnp.broadcast_to(cond.first_frame[:, None], out.shape), atol=1e-6)
  # Silence the transformer (its final projection to zero) and wake the head: the output now depends on
  # x_t pixel by pixel through the 3x3 convolutions only, so a one-pixel change reaches at most 2 pixels away.
  live = perturb(state, scale=0.2, skip=lambda path: "'final'" in path)
  live = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if "'final'" in jax.tree_util.keystr(p) else x, live)
  x = batch["video"]
  a = nnx.merge(graphdef, live)(x, t, cond)
  b = nnx.merge(graphdef, live)(x.at[0, 4, 10, 10].add(1.0), t, cond)
  changed = np.argwhere(np.abs(np.asarray(b - a))[0].max(-1) > 1e-6)
  assert len(changed) > 0
  assert (changed[:, 0] == 4).all()  # frames never mix in the head
  assert np.abs(changed[:, 1:] - 10).max() <= 2  # two 3x3 convolutions


def test_warp_reads_the_image_bilinearly_at_the_displacement():
  """dit.warp against bilinear interpolation written out pixel by pixel (coordinates clamped to the image), and
  its gradient in the displacement is non-zero (the flow loss and the diffusion loss both reach it)."""
  image = jax.random.uniform(jax.random.key(0), (2, 8, 10, 3))
  flow = 2.0 * jax.random.normal(jax.random.key(1), (2, 3, 8, 10, 2))
  img, fl = np.asarray(image, np.float64), np.asarray(flow, np.float64)
  expected = np.zeros((2, 3, 8, 10, 3))
  for b, f, y, x in itertools.product(range(2), range(3), range(8), range(10)):
    sx, sy = np.clip(x + fl[b, f, y, x, 0], 0, 9), np.clip(y + fl[b, f, y, x, 1], 0, 7)
    x0, y0 = min(int(sx), 8), min(int(sy), 6)
    ax, ay = sx - x0, sy - y0
    expected[b, f, y, x] = ((1 - ay) * ((1 - ax) * img[b, y0, x0] + ax * img[b, y0, x0 + 1])
                            + ay * ((1 - ax) * img[b, y0 + 1, x0] + ax * img[b, y0 + 1, x0 + 1]))
  np.testing.assert_allclose(dit.warp(image, flow), expected, atol=1e-5)
  assert np.abs(np.asarray(jax.grad(lambda fl: dit.warp(image, fl).sum())(flow))).mean() > 0.05


def _displacement_model_still_at_init(output):
  """(config, a fresh tiny model with that displacement output, a 1-example batch, its condition, t = 0.5),
  after checking that the fresh model predicts the first frame in every frame, with displacement 0."""
  cfg = tiny(output=output)
  model = dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0))
  batch = make_batch(b=1)
  cond = condition(batch)
  t = jnp.array([0.5])
  out, flow = model(batch["video"], t, cond, return_flow=True)
  np.testing.assert_allclose(out, jnp.broadcast_to(cond.first_frame[:, None], out.shape), atol=1e-6)
  assert flow.shape == batch["video"].shape[:-1] + (2,) and np.abs(np.asarray(flow)).max() == 0
  return cfg, model, batch, cond, t


def test_warp_output_starts_still_and_copies_the_first_frame_at_its_displacement():
  """output="warp": x_0 = first frame + residual + gate x (first frame read at the displacement - first
  frame). At init a still scene; with the head's bias set to a displacement of (+2, -1) pixels and gate 1 (the
  rest silenced), every frame is the first frame read 2 pixels right and 1 up, whatever x_t."""
  cfg, model, batch, cond, t = _displacement_model_still_at_init("warp")
  per_pixel = np.zeros((int(np.prod(cfg.model.patch)), dit.WARP_CHANNELS), np.float32)
  per_pixel[:, 0], per_pixel[:, 1], per_pixel[:, 2] = 2.0 / dit.WARP_PIXELS, -1.0 / dit.WARP_PIXELS, 1.0
  model.final.bias.value = jnp.asarray(per_pixel.reshape(-1))
  x = jax.random.normal(jax.random.key(3), batch["video"].shape)
  out, flow = model(x, t, cond, return_flow=True)
  np.testing.assert_allclose(flow, jnp.broadcast_to(jnp.array([2.0, -1.0]), flow.shape), atol=1e-6)
  first = np.asarray(cond.first_frame[0])
  moved = np.concatenate([first[:1], first[:-1]], 0)  # row y reads row y - 1 (row 0: the edge)
  moved = np.concatenate([moved[:, 2:], moved[:, -1:], moved[:, -1:]], 1)  # column x reads x + 2
  np.testing.assert_allclose(out[0], np.broadcast_to(moved, out[0].shape), atol=1e-5)
  with pytest.raises(ValueError, match="return_flow"):
    dit.VideoDiT(tiny().model, rngs=nnx.Rngs(0))(x, t, cond, return_flow=True)
  for overrides in (dict(head="conv"), dict(prediction="v")):
    with pytest.raises(ValueError, match="model.output"):
      dit.VideoDiT(tiny(output="warp", **overrides).model, rngs=nnx.Rngs(0))


def test_splat_carries_each_pixel_forward_bilinearly_moving_pixels_in_front():
  """dit.splat against forward bilinear splatting written out pixel by pixel: each source pixel spreads over the
  4 pixels around where it lands (outside the frame dropped), weighted by its share x exp(SPLAT_DEPTH tanh(|d|^2));
  the colour is the weighted mean of what landed (the image's own where nothing did), the coverage the sum
  of shares. Its gradient in the displacement is non-zero."""
  image = jax.random.uniform(jax.random.key(0), (2, 6, 7, 3))
  flow = 1.5 * jax.random.normal(jax.random.key(1), (2, 3, 6, 7, 2))
  img, fl = np.asarray(image, np.float64), np.asarray(flow, np.float64)
  num, den, cover = np.zeros((2, 3, 6, 7, 3)), np.zeros((2, 3, 6, 7)), np.zeros((2, 3, 6, 7))
  for b, f, y, x in itertools.product(range(2), range(3), range(6), range(7)):
    dx, dy = fl[b, f, y, x]
    tx, ty = x + dx, y + dy
    depth = np.exp(dit.SPLAT_DEPTH * np.tanh(dx * dx + dy * dy))
    for cx, cy in itertools.product((int(np.floor(tx)), int(np.floor(tx)) + 1), (int(np.floor(ty)), int(np.floor(ty)) + 1)):
      share = (1 - abs(tx - cx)) * (1 - abs(ty - cy))
      if 0 <= cx < 7 and 0 <= cy < 6:
        num[b, f, cy, cx] += share * depth * img[b, y, x]
        den[b, f, cy, cx] += share * depth
        cover[b, f, cy, cx] += share
  landed = den > 1e-6
  expected = np.where(landed[..., None], num / np.where(landed, den, 1)[..., None], img[:, None])
  colour, coverage = dit.splat(image, flow)
  np.testing.assert_allclose(colour, expected, atol=1e-5)
  np.testing.assert_allclose(coverage, cover, atol=1e-5)
  assert np.abs(np.asarray(jax.grad(lambda fl: dit.splat(image, fl)[0].sum())(flow))).mean() > 0.01
  # One pixel moved 2 right over a still floor: it covers the floor where it lands, its old place is empty.
  moved = np.zeros((1, 1, 6, 7, 2), np.float32)
  moved[0, 0, 3, 2] = (2.0, 0.0)
  colour, coverage = (np.asarray(a) for a in dit.splat(image[:1], jnp.asarray(moved)))
  np.testing.assert_allclose(coverage[0, 0, 3, 2], 0.0)
  np.testing.assert_allclose(coverage[0, 0, 3, 4], 2.0)
  w = np.exp(dit.SPLAT_DEPTH * np.tanh(4.0))
  np.testing.assert_allclose(colour[0, 0, 3, 4], (w * img[0, 3, 2] + img[0, 3, 4]) / (w + 1), rtol=1e-5)


def test_splat_output_starts_still_and_carries_the_first_frame_forward():
  """output="splat": x_0 = first frame + residual + coverage x (first frame carried by the displacement - first
  frame). At init a still scene; with the head's bias set to a displacement of (+2, -1) pixels (residual
  silenced), every frame is the first frame moved 2 pixels right and 1 up, the uncovered edge left as it was."""
  cfg, model, batch, cond, t = _displacement_model_still_at_init("splat")
  per_pixel = np.zeros((int(np.prod(cfg.model.patch)), dit.SPLAT_CHANNELS), np.float32)
  per_pixel[:, 0], per_pixel[:, 1] = 2.0 / dit.WARP_PIXELS, -1.0 / dit.WARP_PIXELS
  model.final.bias.value = jnp.asarray(per_pixel.reshape(-1))
  x = jax.random.normal(jax.random.key(3), batch["video"].shape)
  out, flow = model(x, t, cond, return_flow=True)
  np.testing.assert_allclose(flow, jnp.broadcast_to(jnp.array([2.0, -1.0]), flow.shape), atol=1e-6)
  first = np.asarray(cond.first_frame[0])
  moved = first.copy()
  moved[:-1, 2:] = first[1:, :-2]  # pixel (y, x) goes to (y - 1, x + 2); the last row and first 2 columns: none
  np.testing.assert_allclose(out[0], np.broadcast_to(moved, out[0].shape), atol=1e-5)
  # The first column of every patch moved 1 pixel right, onto the second: there two pixels land (coverage 2,
  # counted as 1: the output is what landed, not twice the change), the first column is left empty (coverage 0:
  # the first frame, residual 0).
  out, carried, cover = _first_columns_moved_right(cfg, model, x, t, cond)
  assert float(cover.max()) > 1.5 and float(cover.min()) < 0.5
  np.testing.assert_allclose(out, cond.first_frame[:, None] + jnp.minimum(cover, 1.0)[..., None]
                             * (carried - cond.first_frame[:, None]), atol=1e-5)
  for overrides in (dict(head="conv"), dict(prediction="v")):
    with pytest.raises(ValueError, match="model.output"):
      dit.VideoDiT(tiny(output="splat", **overrides).model, rngs=nnx.Rngs(0))


def _first_columns_moved_right(cfg, model, x, t, cond, residual=0.0):
  """Sets a splat model's head bias so that the first column of every patch moves 1 pixel right (every other
  pixel stays) with `residual` in the residual channels, and runs it: (x_0, what landed, coverage)."""
  per_pixel = np.zeros(tuple(cfg.model.patch) + (dit.SPLAT_CHANNELS,), np.float32)
  per_pixel[:, :, 0, 0] = 1.0 / dit.WARP_PIXELS
  per_pixel[..., 2:5] = residual
  model.final.bias.value = jnp.asarray(per_pixel.reshape(-1))
  out, flow = model(x, t, cond, return_flow=True)
  carried, cover = dit.splat(cond.first_frame, flow)
  return out, carried, cover


def _plate_model_still_at_init(**model_overrides):
  """(config, a fresh tiny model with those overrides, t = 0.5, a 2-example condition whose first example has
  its blob pushed in frame 0's velocity mask and whose second has no mask), after checking that the fresh
  model predicts the first frame in every frame."""
  cfg = tiny(**model_overrides)
  model = dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0))
  batch = make_batch(b=2)
  mask = np.zeros(batch["cond"].velocity_mask.shape, np.float32)
  mask[0, 0][np.abs(np.asarray(batch["video"][0, 0]) + 0.5).max(-1) > 0.1] = (0.5, 0.0, 0.0)  # the blob, pushed
  cond = batch["cond"].replace(velocity_mask=jnp.asarray(mask))
  t = jnp.array([0.5, 0.5])
  out = model(batch["video"], t, cond)
  np.testing.assert_allclose(out, jnp.broadcast_to(cond.first_frame[:, None], out.shape), atol=1e-6)
  return cfg, model, batch, cond, t


def test_warp_plate_gate_copies_the_background_plate_where_the_pushed_object_stood():
  """model.warp_plate: x_0 also gets gate x (background plate - first frame). At init a still scene; with only
  that gate at 1, every frame is the plate (the first frame with the pushed object painted out), and an
  example without a velocity mask stays the first frame."""
  cfg, model, batch, cond, t = _plate_model_still_at_init(output="warp", warp_plate=True)
  assert dit.head_of(cfg.model) == ("linear", dit.WARP_CHANNELS + 1)
  per_pixel = np.zeros((int(np.prod(cfg.model.patch)), dit.WARP_CHANNELS + 1), np.float32)
  per_pixel[:, 6] = 1.0
  model.final.bias.value = jnp.asarray(per_pixel.reshape(-1))
  out = np.asarray(model(jax.random.normal(jax.random.key(3), batch["video"].shape), t, cond))
  plate = np.asarray(conditioning.background_plate(cond.velocity_mask[:, 0], cond.first_frame))
  np.testing.assert_allclose(out, np.broadcast_to(plate[:, None], out.shape), atol=1e-6)
  assert np.abs(plate[0] - np.asarray(cond.first_frame[0])).max() > 0.1  # the plate differs where it stood
  np.testing.assert_allclose(out[1], np.broadcast_to(cond.first_frame[1], out[1].shape), atol=1e-6)
  with pytest.raises(ValueError, match="model.warp_plate"):
    dit.VideoDiT(tiny(warp_plate=True).model, rngs=nnx.Rngs(0))


def test_splat_fill_shows_the_background_plate_where_nothing_lands():
  """model.splat_fill: x_0 = residual + coverage x carried + (1 - coverage) x background plate. At init a still
  scene (every pixel lands on itself); with the first column of every patch moved 1 pixel right, the columns
  left empty show the plate (the first frame with the pushed blob painted out), covered pixels what landed, and
  an example without a velocity mask stays as without the fill."""
  cfg, model, batch, cond, t = _plate_model_still_at_init(output="splat", splat_fill=True)
  assert dit.head_of(cfg.model) == ("linear", dit.SPLAT_CHANNELS)
  x = jax.random.normal(jax.random.key(3), batch["video"].shape)
  out, carried, cover = _first_columns_moved_right(cfg, model, x, t, cond)
  covered = np.asarray(jnp.minimum(cover, 1.0))[..., None]
  plate = np.asarray(conditioning.background_plate(cond.velocity_mask[:, 0], cond.first_frame))
  np.testing.assert_allclose(out, covered * np.asarray(carried) + (1 - covered) * plate[:, None], atol=1e-5)
  empty = covered[0, ..., 0] < 0.5
  assert empty.any() and np.abs(np.asarray(out[0]) - np.asarray(cond.first_frame[0])[None])[empty].max() > 0.1
  without = dit.VideoDiT(tiny(output="splat").model, rngs=nnx.Rngs(0))
  without.final.bias.value = model.final.bias.value
  np.testing.assert_allclose(out[1], without(x, t, cond)[1], atol=1e-5)
  with pytest.raises(ValueError, match="model.splat_fill"):
    dit.VideoDiT(tiny(output="warp", splat_fill=True).model, rngs=nnx.Rngs(0))


def test_splat_gate_paints_the_residual_only_where_nothing_lands():
  """model.splat_gate: x_0 = coverage x carried + (1 - coverage) x (first frame + residual). At init a still
  scene; with the first column of every patch moved 1 pixel right and a residual of +0.3 everywhere, pixels that
  land whole are exactly what landed (no paint), the columns left empty are the first frame + 0.3, and without
  the gate the paint is everywhere."""
  cfg, model, batch, cond, t = _plate_model_still_at_init(output="splat", splat_gate=True)
  x = jax.random.normal(jax.random.key(3), batch["video"].shape)
  out, carried, cover = _first_columns_moved_right(cfg, model, x, t, cond, residual=0.3)
  covered = np.asarray(jnp.minimum(cover, 1.0))[..., None]
  first = np.asarray(cond.first_frame)[:, None]
  np.testing.assert_allclose(out, covered * np.asarray(carried) + (1 - covered) * (first + 0.3), atol=1e-5)
  whole, empty = covered[..., 0] > 0.999, covered[..., 0] < 0.001
  assert whole.any() and empty.any()
  np.testing.assert_allclose(np.asarray(out)[whole], np.asarray(carried)[whole], atol=1e-5)
  np.testing.assert_allclose(np.asarray(out)[empty], np.broadcast_to(first + 0.3, out.shape)[empty], atol=1e-5)
  without = dit.VideoDiT(tiny(output="splat").model, rngs=nnx.Rngs(0))
  without.final.bias.value = model.final.bias.value
  np.testing.assert_allclose(np.asarray(without(x, t, cond))[whole], np.asarray(carried)[whole] + 0.3, atol=1e-5)
  with pytest.raises(ValueError, match="model.splat_gate"):
    dit.VideoDiT(tiny(output="warp", splat_gate=True).model, rngs=nnx.Rngs(0))


def test_rigid_pushed_gives_each_pushed_object_the_mean_of_its_displacements():
  """dit.rigid_pushed: the pixels of each pushed object (nonzero frame-0 mask pixels sharing one mask velocity)
  get, per frame, the mean of their displacements; two objects pushed at different velocities get their own
  means; every other pixel, and an example without a mask, keeps its own; past `groups` objects the rest
  keep theirs."""
  flow = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 6, 6, 2)))
  mask0 = np.zeros((2, 6, 6, 3), np.float32)
  a, b = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
  a[1:3, 1:4] = True
  b[4:6, 3:6] = True
  mask0[0][a] = (0.5, 0.0, 0.1)
  mask0[0][b] = (0.0, -0.25, 0.1)
  out = np.asarray(dit.rigid_pushed(jnp.asarray(flow), jnp.asarray(mask0)))
  for obj in (a, b):
    np.testing.assert_allclose(out[0][:, obj], np.broadcast_to(flow[0][:, obj].mean(1, keepdims=True),
                                                               out[0][:, obj].shape), atol=1e-6)
  assert not np.allclose(out[0][:, a].mean(1), out[0][:, b].mean(1))
  rest = ~(a | b)
  np.testing.assert_array_equal(out[0][:, rest], flow[0][:, rest])
  np.testing.assert_array_equal(out[1], flow[1])
  one = np.asarray(dit.rigid_pushed(jnp.asarray(flow), jnp.asarray(mask0), groups=1))
  np.testing.assert_allclose(one[0][:, a], out[0][:, a], atol=1e-6)  # a's first pixel comes first
  np.testing.assert_array_equal(one[0][:, b], flow[0][:, b])


def test_splat_rigid_moves_the_pushed_object_by_one_displacement():
  """model.splat_rigid: with the first column of every patch moved 1 pixel right, the pushed blob's pixels all
  get the mean displacement (a fraction of a pixel, the same for each) while without the option they move 1 or
  0 pixels; the example without a mask, and every pixel outside the blob, are as without the option; a config
  with another output is refused naming the field."""
  cfg, model, batch, cond, t = _plate_model_still_at_init(output="splat", splat_gate=True, splat_rigid=True)
  x = jax.random.normal(jax.random.key(3), batch["video"].shape)
  out, carried, cover = _first_columns_moved_right(cfg, model, x, t, cond)
  _, flow = model(x, t, cond, return_flow=True)
  without = dit.VideoDiT(tiny(output="splat", splat_gate=True).model, rngs=nnx.Rngs(0))
  without.final.bias.value = model.final.bias.value
  out_free, flow_free = without(x, t, cond, return_flow=True)
  flow, flow_free = np.asarray(flow), np.asarray(flow_free)
  blob = np.abs(np.asarray(cond.velocity_mask[0, 0])).sum(-1) > 0
  assert blob.any() and (~blob).any()
  moved = flow_free[0][:, blob, 0]
  assert moved.min() == 0.0 and moved.max() == pytest.approx(1.0)
  np.testing.assert_allclose(flow[0][:, blob, 0], np.broadcast_to(moved.mean(1, keepdims=True), moved.shape),
                             atol=1e-5)
  assert 0.0 < moved.mean() < 1.0
  np.testing.assert_array_equal(flow[0][:, ~blob], flow_free[0][:, ~blob])
  np.testing.assert_array_equal(flow[1], flow_free[1])
  np.testing.assert_allclose(out[1], out_free[1], atol=1e-6)
  covered = np.asarray(jnp.minimum(cover, 1.0))[..., None]  # the image is the splat of the shared displacement
  np.testing.assert_allclose(out, covered * np.asarray(carried) + (1 - covered) * np.asarray(cond.first_frame)[:, None],
                             atol=1e-5)
  assert not np.allclose(out[0], out_free[0], atol=1e-3)
  with pytest.raises(ValueError, match="model.splat_rigid"):
    dit.VideoDiT(tiny(output="warp", splat_rigid=True).model, rngs=nnx.Rngs(0))


def test_denoise_skip_is_the_inverse_variance_mean_of_the_prediction_and_the_noisy_video():
  """dit.denoise_skip reads P (scale s) and x_t / (1 - t) (scale t / (1 - t)) as two measurements of x_0: their
  inverse-variance mean, P at t = 1, x_t at t = 0, and nearer x_t where P says it is less sure."""
  keys = jax.random.split(jax.random.key(0), 3)
  p, x_t = (jax.random.normal(k, (2, 3, 4, 4, 3)) for k in keys[:2])
  log_scale = jax.random.normal(keys[2], (2, 3, 4, 4, 1))
  t = jnp.array([0.3, 0.7])
  out = np.asarray(dit.denoise_skip(p, x_t, t, log_scale))
  s2 = np.square(dit.SKIP_SCALE * np.exp(np.asarray(log_scale)))
  tb = np.asarray(t)[:, None, None, None, None]
  r2 = np.square(tb / (1 - tb))
  expected = (np.asarray(p) / s2 + np.asarray(x_t) / (1 - tb) / r2) / (1 / s2 + 1 / r2)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dit.denoise_skip(p, x_t, jnp.ones(2), log_scale), p, atol=1e-6)
  np.testing.assert_allclose(dit.denoise_skip(p, x_t, jnp.zeros(2), log_scale), x_t, atol=1e-5)
  unsure = np.asarray(dit.denoise_skip(p, x_t, t, log_scale + 1.0))
  assert np.all(np.abs(unsure - np.asarray(x_t) / (1 - tb)) <= np.abs(out - np.asarray(x_t) / (1 - tb)) + 1e-6)


def test_denoise_skip_model_keeps_what_the_noisy_video_shows_at_low_noise():
  """model.denoise_skip: one more head channel (the log scale); at init the warp model's prediction is the
  still scene at t = 1 and the noisy video itself as t -> 0, and its scale channel moves it between them.
  A config that cannot take it (prediction "v") is refused naming the field."""
  cfg = tiny(output="warp", denoise_skip=True)
  assert dit.head_of(cfg.model) == ("linear", dit.WARP_CHANNELS + 1)
  model = dit.VideoDiT(cfg.model, rngs=nnx.Rngs(0))
  batch = make_batch(b=2)
  cond = batch["cond"]
  x_t = diffusion.with_given_frame(jax.random.normal(jax.random.key(3), batch["video"].shape), cond)
  still = np.broadcast_to(np.asarray(cond.first_frame)[:, None], x_t.shape)
  np.testing.assert_allclose(model(x_t, jnp.ones(2), cond), still, atol=1e-6)
  np.testing.assert_allclose(model(x_t, jnp.full((2,), 1e-4), cond), x_t, atol=1e-2)
  mid = np.asarray(model(x_t, jnp.full((2,), 0.3), cond))
  per_pixel = np.zeros((int(np.prod(cfg.model.patch)), dit.WARP_CHANNELS + 1), np.float32)
  per_pixel[:, -1] = 3.0  # s = 0.1 e^3: much less sure of P
  model.final.bias.value = jnp.asarray(per_pixel.reshape(-1))
  unsure = np.asarray(model(x_t, jnp.full((2,), 0.3), cond))
  target = np.asarray(x_t) / 0.7
  assert np.abs(unsure - target)[:, 1:].mean() < 0.2 * np.abs(mid - target)[:, 1:].mean()
  with pytest.raises(ValueError, match="model.denoise_skip"):
    dit.VideoDiT(tiny(denoise_skip=True, prediction="v", output="video").model, rngs=nnx.Rngs(0))
