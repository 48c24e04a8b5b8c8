"""Plants known bugs in a copy of the repository, one at a time, and checks that the tests covering that code
go red: `python scripts/plant_bugs.py [--only NAME ...] [--list]`.

Each entry of BUGS is (name, file, exact text, replacement, pytest selection). The copy lives in a temporary
folder (the working tree is never touched); the script prints a table (bug, tests, caught or SURVIVED,
seconds) and exits 1 if a bug survived. A planted text that no longer occurs in the file is reported as
STALE (the code moved: update the entry), never silently skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLER = "tests/test_model.py -k 'closed_form or reaches'"  # pytest arguments: files, then -k
GUIDANCE = "tests/test_model.py -k 'guidance'"
BUGS = [
    # The sampler and guidance (kinemask_jax/model/diffusion.py).
    ("Euler steps scaled by 0.3", "kinemask_jax/model/diffusion.py", "x_euler = x + (t_next - t) * v",
     "x_euler = x + 0.3 * (t_next - t) * v", SAMPLER),
    ("intermediate Euler steps scaled by 0.3", "kinemask_jax/model/diffusion.py", "x_euler = x + (t_next - t) * v",
     "x_euler = x + jnp.where(t_next > 0, 0.3, 1.0) * (t_next - t) * v", SAMPLER),
    ("Heun update replaced by 5 v_next", "kinemask_jax/model/diffusion.py", "x_heun = x + (t_next - t) * 0.5 * (v + v_next)",
     "x_heun = 5 * v_next", SAMPLER),
    ("Heun on the last step too", "kinemask_jax/model/diffusion.py", "return (jnp.where(t_next > 0, x_heun, x_euler), prev), None",
     "return (x_heun, prev), None", SAMPLER),
    ("time grid not shifted", "kinemask_jax/model/diffusion.py", "return (shift * t / (1 + (shift - 1) * t))",
     "return (t * 1.0)", SAMPLER),
    ("frame 0's velocity not zeroed", "kinemask_jax/model/diffusion.py", "v = v.at[:, 0].set(0.0)", "v = v", SAMPLER),
    ("object mask ignores where objects were in frame 0", "kinemask_jax/model/diffusion.py",
     "return (ids > 0) | (ids[:, :1] > 0)", "return ids > 0", "tests/test_conditioning.py -k 'object_weight or flow'"),
    ("loss ignores the pixel weight", "kinemask_jax/model/diffusion.py", "    err = err * pixel_weight\n",
     "    err = err\n", "tests/test_conditioning.py -k object_weight"),
    ("video task drops the pixel weight", "kinemask_jax/training/video.py", 'batch.get("pixel_weight"), batch.get("flow")',
     'None, batch.get("flow")', "tests/test_conditioning.py -k object_weight"),
    ("guidance branches swapped", "kinemask_jax/model/diffusion.py", "v_none, v_mask, v_full = jnp.split(v, 3)",
     "v_full, v_mask, v_none = jnp.split(v, 3)", GUIDANCE),
    ("guidance none and mask branches swapped", "kinemask_jax/model/diffusion.py", "v_none, v_mask, v_full = jnp.split(v, 3)",
     "v_mask, v_none, v_full = jnp.split(v, 3)", GUIDANCE),
    ("text guidance against the wrong branch", "kinemask_jax/model/diffusion.py",
     "text_scale * (v_full - v_mask)", "text_scale * (v_full - v_none)", GUIDANCE),
    ("loss over frame 0 too", "kinemask_jax/model/diffusion.py", "total = jnp.mean(err[:, 1:])", "total = jnp.mean(err)",
     "tests/test_conditioning.py"),
    # The velocity mask and the curriculum.
    ("velocity mask not clipped to v_max", "kinemask_jax/model/velocity_mask.py",
     "table = jnp.clip(table / v_max, -1.0, 1.0)", "table = table / v_max", "tests/test_model.py -k velocity_mask"),
    ("uncontrolled objects keep their velocity", "kinemask_jax/model/velocity_mask.py",
     "jnp.where(ctrl[None, :, None], vel, 0.0)", "vel", "tests/test_model.py -k velocity_mask"),
    ("curriculum ramp ends at k = 0", "kinemask_jax/training/curriculum.py", "jnp.ceil(num_frames - (num_frames - 1) * progress",
     "jnp.ceil(num_frames - num_frames * progress", "tests/test_train.py -k curriculum"),
    ("floor case keeps 2 frames", "kinemask_jax/training/curriculum.py", "jnp.where(floor, 1, scheduled_k(",
     "jnp.where(floor, 2, scheduled_k(", "tests/test_train.py -k 'curriculum or model_batch'"),
    ("cut keeps frame k too", "kinemask_jax/model/velocity_mask.py", "present = (jnp.arange(t) < jnp.asarray(k)[..., None])",
     "present = (jnp.arange(t) <= jnp.asarray(k)[..., None])", "tests/test_train.py -k 'curriculum or model_batch'"),
    # Condition building and the sampling API.
    ("API condition ignores the velocity", "kinemask_jax/model/conditioning.py",
     "vel = jnp.broadcast_to(velocities[:, None], (b, num_frames) + velocities.shape[1:])",
     "vel = jnp.zeros((b, num_frames) + velocities.shape[1:])",
     "tests/test_conditioning.py tests/test_sampling.py -k 'every_input or same_condition'"),
    ("API condition uses k = 2", "kinemask_jax/model/conditioning.py",
     "mask, present = velocity_masks(ids, vel, controlled, jnp.ones((b,), jnp.int32), v_max)",
     "mask, present = velocity_masks(ids, vel, controlled, jnp.full((b,), 2, jnp.int32), v_max)",
     "tests/test_conditioning.py"),
    ("batch noise not per seed", "kinemask_jax/sampling/api.py", "seeds = [seed + i for i in range(n or 1)]",
     "seeds = [seed] * (n or 1)", "tests/test_sampling.py -k batch_item"),
    ("batch noise drawn for the batch", "kinemask_jax/sampling/api.py",
     "noise = jnp.stack([initial_noise(s, self.video_shape) for s in seeds])",
     "noise = jax.random.normal(jax.random.key(seeds[0]), (len(seeds),) + self.video_shape)",
     "tests/test_sampling.py -k batch_item"),
    ("API object ids off by one", "datagen/truth.py", "    ids[m] = k + 1", "    ids[m] = k",
     "tests/test_conditioning.py tests/test_sampling.py -k 'every_input or same_condition'"),
    ("prompt not passed to the model", "kinemask_jax/sampling/api.py",
     "text_ids, text_lengths = self.tokenizer.encode_batch(prompts)",
     "text_ids, text_lengths = self.tokenizer.encode_batch([''] * len(prompts))", "tests/test_sampling.py -k every_input"),
    # The tracker and the metrics.
    ("tracker centroids without the pixel-centre offset", "datagen/truth.py",
     "ys, xs = np.mgrid[0:h, 0:w] + 0.5", "ys, xs = np.mgrid[0:h, 0:w] + 0.0", "tests/test_tracking.py"),
    ("lost objects cost nothing", "kinemask_jax/evaluation/metrics.py",
     "err = np.where(c.truth_visible & ~np.isfinite(c.centroid[..., 0]), float(c.video.shape[2]), err)",
     "err = np.where(c.truth_visible & ~np.isfinite(c.centroid[..., 0]), 0.0, err)", "tests/test_tracking.py"),
    ("spearman of a constant response is 1", "kinemask_jax/evaluation/metrics.py",
     "if np.ptp(x) == 0 or np.ptp(y) == 0:\n    return 0.0", "if np.ptp(x) == 0 or np.ptp(y) == 0:\n    return 1.0",
     "tests/test_tracking.py"),
    # The house (issue 14): the architecture, the tables, stored vocabularies, the one loop, TFDS configs.
    ("the sampling API imports training code", "kinemask_jax/sampling/api.py",
     "from kinemask_jax.store import models\n", "from kinemask_jax.store import models\nfrom kinemask_jax.training import trainer  # noqa\n",
     "tests/test_architecture.py"),
    ("captions ignore the shape table's nouns", "datagen/captions.py",
     "shapes_lib.by_id(scene.shape[k]).nouns[rng.integers(2)]", "('cube', 'block')[rng.integers(2)]",
     "tests/test_scenes.py -k registered"),
    ("the report's columns ignore the metric table", "kinemask_jax/evaluation/report.py",
     "for m in metrics.METRICS.values()]", "for m in list(metrics.METRICS.values())[:14]]",
     "tests/test_tracking.py -k registered"),
    ("a weights folder is read with the grammar's vocabulary", "kinemask_jax/store/models.py",
     "  check_model_config(meta[\"config\"], directory)\n  return config_from_json(meta[\"config\"]), meta",
     "  check_model_config(meta[\"config\"], directory)\n  config = config_from_json(meta[\"config\"])\n"
     "  config.model.text.vocabulary = grammar_vocabulary()\n  return config, meta",
     "tests/test_weights.py -k vocabulary"),
    ("the predictor's classes come from the current tables", "kinemask_jax/outcome/predictor.py",
     "    v = predictor_cfg[\"vocabulary\"]\n", "    return cls.current()\n    v = predictor_cfg[\"vocabulary\"]\n",
     "tests/test_describe.py -k classes"),
    ("the loop skips the finite guard", "kinemask_jax/training/loop.py",
     "  if metrics.pop(\"finite\"):\n    return", "  if metrics.pop(\"finite\") or True:\n    return",
     "tests/test_train.py -k non_finite"),
    ("the TFDS builder reads a variant with its size's default features", "datagen/kinemask_synth.py",
     "    if stored and os.path.exists(stored):", "    if False:", "tests/test_dataset.py -k tfds_entry"),
    ("grouped rendering puts the scenes' videos out of order", "datagen/render.py",
     "jax.lax.map(scene, (sc, position, quat), batch_size=group)",
     "jax.lax.map(scene, (sc, position[::-1], quat[::-1]), batch_size=group)", "tests/test_render.py -k groups"),
    # The demo (a real browser).
    ("demo's simulator ignores the user's pushes", "kinemask_jax/demo_session.py",
     "scenes.with_pushes(s.engine_scene, pushes)", "scenes.with_pushes(s.engine_scene, {})",
     "tests/test_demo.py -k browser"),
    # Checkpoint restore.
    ("resume without the data iterator's state", "kinemask_jax/training/loop.py", "    batches.set_state(restored[\"data\"])\n",
     "", "tests/test_train.py -k sigkill"),
    ("inference restores the frozen weights as initialised", "kinemask_jax/store/checkpoints.py",
     "return restored[\"ema\"], restored[\"state\"][\"frozen\"] if \"state\" in args else template_frozen",
     "return restored[\"ema\"], template_frozen", "tests/test_weights.py"),
    ("restore drops the EMA", "kinemask_jax/store/checkpoints.py", "out[\"state\"] = out[\"state\"].replace(ema=out.pop(\"ema\"))",
     "out.pop(\"ema\")", "tests/test_train.py -k sigkill"),
    # The warp output's displacement target (kinemask_jax/model/diffusion.py, training/curriculum.py).
    ("flow target points forward, not back to frame 0", "kinemask_jax/model/diffusion.py",
     "shift = (centroid[:, :1] - centroid) * valid[..., None]", "shift = (centroid - centroid[:, :1]) * valid[..., None]",
     "tests/test_conditioning.py -k flow"),
    ("floor weight also on the floor an object left", "kinemask_jax/model/diffusion.py",
     "(~object_now_or_in_frame_0(ids))", "(ids == 0)", "tests/test_conditioning.py -k flow"),
    ("the batch ignores flow_background_weight", "kinemask_jax/training/curriculum.py",
     "config.diffusion.get(\"flow_background_weight\", 0.0))", "0.0)", "tests/test_conditioning.py -k flow"),
    ("the batch ignores flow_other_weight", "kinemask_jax/training/curriculum.py",
     "other_weight=config.diffusion.get(\"flow_other_weight\", 0.0))", "other_weight=0.0)",
     "tests/test_conditioning.py -k flow"),
    ("flow_other_weight weighs the pushed objects too", "kinemask_jax/model/diffusion.py",
     "others = 1.0 - jnp.asarray(controlled)", "others = 1.0 + 0.0 * jnp.asarray(controlled)",
     "tests/test_conditioning.py -k object_flow"),
    ("flow_other_weight in frame 0 only", "kinemask_jax/model/diffusion.py",
     "per_object = valid * (1.0 + other_weight * others[:, None, :])",
     "per_object = valid * (1.0 + other_weight * others[:, None, :] * (jnp.arange(valid.shape[1]) == 0)[None, :, None])",
     "tests/test_conditioning.py -k object_flow"),
    ("abs flow loss is the squared error", "kinemask_jax/model/diffusion.py",
     "return (jnp.sqrt(sq + FLOW_ABS_EPS ** 2) - FLOW_ABS_EPS) * weight", "return sq * weight",
     "tests/test_conditioning.py -k abs_flow"),
    ("the video task ignores diffusion.flow_loss", "kinemask_jax/training/video.py",
     "d.get(\"flow_loss\", \"squared\"))", "\"squared\")", "tests/test_conditioning.py -k abs_flow"),
    # The warp output's background plate (kinemask_jax/model/conditioning.py, dit.py).
    ("plate hole not grown by a pixel", "kinemask_jax/model/conditioning.py",
     "hole = _box3(pushed[..., None]) > 0", "hole = pushed[..., None] > 0", "tests/test_conditioning.py -k plate"),
    ("plate fill divides by 9, not by the filled neighbours", "kinemask_jax/model/conditioning.py",
     "image = jnp.where(reached, total / jnp.maximum(count, 1.0), image)",
     "image = jnp.where(reached, total / 9.0, image)", "tests/test_conditioning.py -k plate"),
    ("plate gate reads the warp gate", "kinemask_jax/model/dit.py", "out = out + y[..., 6:7] * (plate - first)[:, None]",
     "out = out + y[..., 2:3] * (plate - first)[:, None]", "tests/test_model.py -k warp_plate"),
    # The splat output (kinemask_jax/model/dit.py, diffusion.object_flow(forward=True), training/curriculum.py).
    ("splat: still pixels land in front of moving ones", "kinemask_jax/model/dit.py",
     "depth = jnp.exp(SPLAT_DEPTH * jnp.tanh(", "depth = jnp.exp(-SPLAT_DEPTH * jnp.tanh(", "tests/test_model.py -k splat"),
    ("splat: coverage not clipped at 1", "kinemask_jax/model/dit.py",
     "jnp.clip(cover, 0.0, 1.0)[..., None]", "cover[..., None]", "tests/test_model.py -k splat"),
    ("forward flow target points back to frame 0", "kinemask_jax/model/diffusion.py",
     "return jnp.einsum(\"bhwn,btnc->bthwc\", first, -shift), weight", "return jnp.einsum(\"bhwn,btnc->bthwc\", first, shift), weight",
     "tests/test_conditioning.py -k flow"),
    ("the batch gives a splat model the backward target", "kinemask_jax/training/curriculum.py",
     "forward=config.model.output == \"splat\")", "forward=False)", "tests/test_conditioning.py -k flow"),
    ("splat fill: the first frame behind, not the plate", "kinemask_jax/model/dit.py",
     "first) if self.splat_fill else first", "first) if False else first", "tests/test_model.py -k splat_fill"),
    ("splat fill: the plate also behind covered pixels", "kinemask_jax/model/dit.py",
     "(1 - covered) * behind[:, None]", "behind[:, None] - covered * first[:, None]", "tests/test_model.py -k splat"),
    ("splat gate: the residual not gated", "kinemask_jax/model/dit.py",
     "residual = (1 - covered) * residual", "residual = residual", "tests/test_model.py -k splat_gate"),
    ("splat gate: the residual gated by coverage, not by what is left", "kinemask_jax/model/dit.py",
     "residual = (1 - covered) * residual", "residual = covered * residual", "tests/test_model.py -k splat_gate"),
    ("splat rigid: the shared displacement never applied", "kinemask_jax/model/dit.py",
     "flow = rigid_pushed(flow, cond.velocity_mask[:, 0])", "flow = flow", "tests/test_model.py -k rigid"),
    ("splat rigid: objects pushed at different velocities pooled together", "kinemask_jax/model/dit.py",
     "member = remaining & (jnp.abs(m - key[:, None, None]).max(-1) <= 1e-6)", "member = remaining",
     "tests/test_model.py -k rigid"),
    ("splat rigid: a grouped object is never taken off the remaining pixels", "kinemask_jax/model/dit.py",
     "remaining = remaining & ~member", "remaining = remaining", "tests/test_model.py -k rigid"),
    # The evaluation's pixel error by region (kinemask_jax/evaluation/metrics.py).
    ("regions: still and moving objects swapped", "kinemask_jax/evaluation/metrics.py", "moving = moving_ids[ids] & ~background",
     "moving = ~moving_ids[ids] & ~background", "tests/test_tracking.py -k region"),
    ("regions: the uncovered floor judged by the current frame", "kinemask_jax/evaluation/metrics.py", "under0 = c.truth_ids[0] > 0",
     "under0 = c.truth_ids[-1] > 0", "tests/test_tracking.py -k region"),
    ("regions: frame 0 counted", "kinemask_jax/evaluation/metrics.py", "ids = c.truth_ids[c.frames]", "ids = c.truth_ids[1:][::-1]", "tests/test_tracking.py -k region"),
    ("regions: pooled as a mean of per-video means", "kinemask_jax/evaluation/metrics.py", "_region_error(\"moving\"), _ratio)",
     "_region_error(\"moving\"), lambda p: float(np.mean([a / max(b, 1) for a, b in p])))", "tests/test_tracking.py -k region"),
    # The denoising skip (kinemask_jax/model/dit.py).
    ("skip reads x_t without undoing its (1 - t) scale", "kinemask_jax/model/dit.py",
     "s2 * (1 - tb) * (x_t - (1 - tb) * prediction)", "s2 * (1 - tb) * (x_t - prediction)",
     "tests/test_model.py -k denoise_skip"),
    ("skip scale channel taken from the residual", "kinemask_jax/model/dit.py",
     "y, log_scale = y[..., :-1], y[..., -1:]", "y, log_scale = y[..., :-1], y[..., 3:4]",
     "tests/test_model.py -k denoise_skip"),
    ("skip left out of the output", "kinemask_jax/model/dit.py", "    if log_scale is not None:\n",
     "    if False:\n", "tests/test_model.py -k denoise_skip"),
    # The data engine's pipeline (datagen/engine.py).
    ("the next batch simulates only after this one's examples", "datagen/engine.py",
     "      if more:\n        running = simulation.submit(simulate_next, prepared[i + 1])\n"
     "      prepared[i] = None  # the list does not keep a handed-out batch's arrays alive\n"
     "      yield from _handed_out(finish_batch(done, cfg, timings), timings, began)\n",
     "      examples = finish_batch(done, cfg, timings)\n      if more:\n"
     "        running = simulation.submit(simulate_next, prepared[i + 1])\n"
     "      yield from _handed_out(examples, timings, began)\n", "tests/test_engine.py -k simulates"),
    ("the engine ignores its deadline", "datagen/engine.py",
     "(deadline is None or time.perf_counter() < deadline)", "(deadline is None or True)",
     "tests/test_engine.py -k deadline"),
    ("the pipeline simulates batch i + 2 in place of batch i + 1", "datagen/engine.py",
     "prepared[i + 1])", "prepared[min(i + 2, len(prepared) - 1)])", "tests/test_engine.py -k pipelined"),
    # The merged, culled MJX collision (datagen/mjx_collision.py).
    ("the cull never reports an overflow", "datagen/mjx_collision.py",
     "flags.append((dist <= 0).sum() > group.keep)", "flags.append((dist <= 0).sum() > 10**6)", "tests/test_mjx_collision.py"),
    ("the cull keeps the farthest pairs", "datagen/mjx_collision.py",
     "neg, rows = jax.lax.top_k(-dist, group.keep)", "neg, rows = jax.lax.top_k(dist, group.keep)",
     "tests/test_mjx_collision.py -k give_mjx"),
    ("the world cull uses the objects' limit", "datagen/mjx_collision.py",
     "(cull.world, cull.batch_world) if with_world", "(cull.objects, cull.batch_world) if with_world",
     "tests/test_mjx_collision.py -k overflow"),
    ("a world box reaches twice its size", "datagen/mjx_collision.py",
     "jnp.abs(local) - m.geom_size[box]", "jnp.abs(local) - 2 * m.geom_size[box]",
     "tests/test_mjx_collision.py -k reach"),
    ("the budget collides one pair fewer than it may", "datagen/mjx_collision.py",
     "(flat & (jnp.cumsum(flat) <= _budget_slots", "(flat & (jnp.cumsum(flat) < _budget_slots",
     "tests/test_mjx_collision.py -k budget"),
    ("pairs the budget skipped touch", "datagen/mjx_collision.py",
     "((dist, _NO_CONTACT_M), (pos", "((dist, -_NO_CONTACT_M), (pos", "tests/test_mjx_collision.py -k budget"),
    ("merged pairs all use the first mesh", "datagen/mjx_collision.py",
     "stacked = jax.tree.map(lambda *fields: jnp.stack(fields)[index], *convex)",
     "stacked = jax.tree.map(lambda *fields: jnp.stack(fields)[index * 0], *convex)",
     "tests/test_mjx_collision.py -k give_mjx"),
    ("the data laid out with MJX's own contact count", "datagen/mjx_collision.py",
     "collision_driver.make_condim = lambda m, impl=None: condim(m, cull)", "pass",
     "tests/test_mjx_collision.py -k hands_overflowing"),
    ("the compaction keeps the shallowest contacts", "datagen/mjx_collision.py",
     "jax.lax.top_k(contact.includemargin - contact.dist, cull.contacts)",
     "jax.lax.top_k(contact.dist - contact.includemargin, cull.contacts)", "tests/test_mjx_collision.py -k deepest"),
    ("a full house of contacts is flagged only when one touches", "datagen/mjx_collision.py",
     "flags.append((contact.dist < contact.includemargin).all())",
     "flags.append((contact.dist < contact.includemargin).all() & False)", "tests/test_mjx_collision.py -k deepest"),
    ("the compaction ignores condims", "datagen/mjx_collision.py", "if len(set(emitted.tolist())) > 1:",
     "if False:", "tests/test_mjx_collision.py -k deepest"),
    # Compiling ahead (kinemask_jax/sampling/api.py, kinemask_jax/express.py).
    ("the batch bucket never pads", "kinemask_jax/sampling/api.py",
     "pad = -n % self.batch_bucket if self.batch_bucket else 0", "pad = 0", "tests/test_sampling.py -k warm"),
    ("warm compiles the config's number of steps", "kinemask_jax/sampling/api.py",
     "**self._settings(num_steps, method, text_scale, mask_scale)).compile()",
     "**self._settings(None, method, text_scale, mask_scale)).compile()", "tests/test_sampling.py -k warm"),
    ("threaded scoring pairs videos with the wrong examples", "kinemask_jax/evaluation/score.py",
     "threshold), zip(videos, examples)))", "threshold), zip(videos[::-1], examples)))",
     "tests/test_tracking.py -k threaded"),
    ("the evaluation reads a TFDS split in its record order", "kinemask_jax/evaluation/score.py",
     "for i in sorted(range(len(source)), key=lambda i: int(source[i][\"seed\"])):", "for i in range(len(source)):",
     "tests/test_dataset.py -k seed_order"),
    ("a refused step compiled ahead is not replaced", "kinemask_jax/training/loop.py",
     "except (TypeError, ValueError) as e:", "except KeyError as e:", "tests/test_express.py -k refuses_the_batch"),
    ("the activated mesh shared by every thread", "kinemask_jax/model/sharding.py",
     "class _Active(threading.local):", "class _Active:", "tests/test_sharding.py -k belongs_to_its_thread"),
    ("the loan run never compiles ahead", "kinemask_jax/express.py", "ahead = Ahead(precompile)", "ahead = Ahead(False)",
     "tests/test_express.py -k end_to_end"),
]


def _copy_tree(dst: str) -> None:
  files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
  for f in files:
    if os.path.exists(os.path.join(ROOT, f)):
      os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
      shutil.copy2(os.path.join(ROOT, f), os.path.join(dst, f))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="*", default=None, help="names (substrings) of the bugs to plant")
  parser.add_argument("--list", action="store_true", help="list the bugs and exit")
  args = parser.parse_args()
  bugs = [b for b in BUGS if not args.only or any(o in b[0] for o in args.only)]
  if args.list or not bugs:
    for b in BUGS:
      print(f"{b[0]:<48} {b[1]}")
    return 0 if bugs else 2
  rows, survived = [], 0
  with tempfile.TemporaryDirectory(prefix="plant_bugs_") as tmp:
    _copy_tree(tmp)
    for name, path, old, new, selection in bugs:
      target = os.path.join(tmp, path)
      with open(target) as f:
        original = f.read()
      if original.count(old) != 1:
        rows.append((name, selection, "STALE", 0.0))
        survived += 1
        continue
      with open(target, "w") as f:
        f.write(original.replace(old, new))
      start = time.time()
      proc = subprocess.run(f"{sys.executable} -m pytest -n 0 -x -q -p no:cacheprovider {selection}", shell=True, cwd=tmp,
                            capture_output=True, text=True)
      with open(target, "w") as f:
        f.write(original)
      caught = proc.returncode == 1  # 1: tests failed; 0: all passed; others: collection or usage problems
      status = "caught" if caught else "SURVIVED" if proc.returncode == 0 else f"ERROR rc={proc.returncode}"
      survived += not caught
      rows.append((name, selection, status, time.time() - start))
      print(f"{status:<9} {time.time() - start:6.1f} s  {name}", flush=True)
  print("\n| planted bug | tests run | result | s |\n|---|---|---|---|")
  for name, selection, status, seconds in rows:
    print(f"| {name} | `{selection}` | {status} | {seconds:.0f} |")
  print(f"\n{len(rows) - survived} of {len(rows)} planted bugs caught")
  return 1 if survived else 0


if __name__ == "__main__":
  sys.exit(main())
