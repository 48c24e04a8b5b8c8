"""Train state and the jitted, sharded train step, for any model the training loop trains.

A `Task` says what trains: how to build the model, which of its parameters train, and its loss. The model
is split once into a static graph definition and three pytrees: the parameters that train, the frozen ones
(e.g. the video backbone under `freeze_backbone`, else empty) and their EMA. The step applies the task's
`prepare` (batch preparation that runs on the device, e.g. the curriculum's conditioning), AdamW after
global-norm clipping and the EMA update, and leaves the state untouched when the loss or the gradient norm
is not finite (the in-step finite guard; the loop sees `finite` and stops). The video model's task is
training/video.py's, the outcome predictor's training/outcome.py's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datagen import cli
from kinemask_jax.model import sharding as shd


@dataclasses.dataclass(frozen=True)
class Task:
  """What a Trainer trains.

  build: seed -> a freshly initialised nnx.Module; trainable: nnx filter of its parameters that train;
  loss: (model, batch, rng) -> (scalar loss, dict of scalar metrics); prepare: optional (batch, step, rng) ->
  (batch, extra metrics), run inside the jitted step before the loss.
  """
  build: Callable[[int], nnx.Module]
  loss: Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]]
  trainable: Any = nnx.Param
  prepare: Callable | None = None

@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # nnx.State of the trained parameters
  frozen: Any  # nnx.State of everything else in the model
  ema: Any  # EMA of `params`
  opt_state: Any
  rng: jax.Array


def learning_rate_schedule(optim) -> optax.Schedule:
  """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 over `decay_steps`."""
  return optax.warmup_cosine_decay_schedule(
      0.0, optim.learning_rate, max(optim.warmup_steps, 1), optim.warmup_steps + optim.decay_steps)


def make_optimizer(optim) -> optax.GradientTransformation:
  """AdamW on the schedule above, after global-norm gradient clipping."""
  return optax.chain(optax.clip_by_global_norm(optim.grad_clip),
                     optax.adamw(learning_rate_schedule(optim), b1=optim.b1, b2=optim.b2,
                                 weight_decay=optim.weight_decay))


def validate_optim(o) -> None:
  """Raises cli.ConfigError naming the first `optim` field out of its range (every trained model's)."""
  require = cli.require
  require(o.learning_rate > 0, "optim.learning_rate", f"must be > 0, got {o.learning_rate!r}")
  for field in ("warmup_steps", "decay_steps"):
    require(o[field] >= 0, f"optim.{field}", f"must be >= 0, got {o[field]!r}")
  require(0.0 <= o.ema_decay < 1.0, "optim.ema_decay", f"must be in [0, 1), got {o.ema_decay!r}")
  require(o.grad_clip > 0, "optim.grad_clip", f"must be > 0, got {o.grad_clip!r}")


def ema_update(ema, params, step, ema_decay: float):
  """The EMA after a step, with warm-up: decay min(ema_decay, (1 + step) / (10 + step)), so that early on the
  average follows the parameters closely and a short run's EMA is not still mostly the initialisation."""
  decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Builds the train state and the jitted step of a Task under a config's `optim` (and, on a mesh, its
  `sharding_rules`)."""
  config: Any
  task: Task
  mesh: Mesh | None = None

  @functools.cached_property
  def graphdef(self):
    return nnx.split(nnx.eval_shape(lambda: self.task.build(0)), self.task.trainable, ...)[0]

  def _init(self, seed) -> TrainState:
    _, params, frozen = nnx.split(self.task.build(seed), self.task.trainable, ...)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                      ema=jax.tree.map(jnp.copy, params), opt_state=make_optimizer(self.config.optim).init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))

  def state_sharding(self, state: TrainState) -> TrainState:
    """NamedShardings for a (possibly abstract) state: variables by their logical names, the rest replicated."""
    replicated = NamedSharding(self.mesh, PartitionSpec())
    def one(x):
      if isinstance(x, nnx.Variable):
        return shd.state_shardings(x, self.mesh, self.config.sharding_rules)
      return replicated
    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))

  def batch_sharding(self, batch: dict) -> dict:
    """Every array of the batch (a pytree) sharded over the mesh's batch axes."""
    return jax.tree.map(lambda v: shd.batch_sharding(self.mesh, self.config.sharding_rules, v.shape), batch)

  def init(self, seed: int) -> TrainState:
    """A fresh train state; on a mesh each array is created already sharded."""
    if self.mesh is None:
      return self._init(seed)
    abstract = jax.eval_shape(lambda: self._init(seed))
    with shd.activate(self.mesh, self.config.sharding_rules):
      return jax.jit(lambda: self._init(seed), out_shardings=self.state_sharding(abstract))()

  def abstract_state(self, seed: int = 0) -> TrainState:
    """The state's shapes and dtypes (jax.ShapeDtypeStruct leaves), without allocating it."""
    return jax.eval_shape(lambda: self._init(seed))

  def loss_and_metrics(self, params, frozen, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    return self.task.loss(nnx.merge(self.graphdef, params, frozen), batch, rng)

  def loss(self, params, frozen, batch: dict, rng: jax.Array) -> jax.Array:
    """The task's loss alone (differentiable in `params`)."""
    return self.loss_and_metrics(params, frozen, batch, rng)[0]

  def _step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    step_rng = jax.random.fold_in(step_rng, state.step)
    extra = {}
    if self.task.prepare is not None:
      prepare_rng, step_rng = jax.random.split(step_rng)
      batch, extra = self.task.prepare(batch, state.step, prepare_rng)
    (loss, parts), grads = jax.value_and_grad(self.loss_and_metrics, has_aux=True)(state.params, state.frozen, batch,
                                                                                  step_rng)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = make_optimizer(self.config.optim).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(state.ema, params, state.step, self.config.optim.ema_decay)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = TrainState(step=state.step + 1, params=params, frozen=state.frozen, ema=ema, opt_state=opt_state,
                     rng=jax.random.key_data(rng))
    # A non-finite step leaves the state untouched; the caller sees `finite` and stops.
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = dict(loss=loss, grad_norm=grad_norm, finite=finite,
                   learning_rate=learning_rate_schedule(self.config.optim)(state.step), **parts, **extra)
    return new, metrics

  def _jit(self, fn, in_shardings, out_shardings, **kwargs):
    """jax.jit of `fn`; on a mesh with the given shardings (callables) and the mesh's rules active."""
    if self.mesh is None:
      return jax.jit(fn, **kwargs)
    rules = self.config.sharding_rules

    def sharded(*args):
      with shd.activate(self.mesh, rules):
        return fn(*args)
    return jax.jit(sharded, in_shardings=in_shardings(), out_shardings=out_shardings(), **kwargs)

  def jit_step(self, state: TrainState, batch: dict):
    """The jitted train step (state, batch) -> (state, metrics) with explicit shardings; donates `state`."""
    replicated = lambda: NamedSharding(self.mesh, PartitionSpec())
    return self._jit(self._step, lambda: (self.state_sharding(state), self.batch_sharding(batch)),
                     lambda: (self.state_sharding(state), replicated()), donate_argnums=0)

  def compile_step(self, state: TrainState, batch: dict):
    """The train step of `jit_step` compiled ahead of time for states and batches shaped like these (concrete
    or jax.ShapeDtypeStruct, e.g. `abstract_state()`), e.g. on a helper thread while data is generated; call it
    as the jitted step. It refuses (TypeError or ValueError) a state or batch of another shape or sharding."""
    return self.jit_step(state, batch).lower(state, batch).compile()

  def jit_loss_and_grads(self, state: TrainState, batch: dict):
    """Jitted (state, batch, rng) -> (loss, grads) under this trainer's shardings (for checks)."""
    replicated = lambda: NamedSharding(self.mesh, PartitionSpec())
    return self._jit(lambda s, b, r: jax.value_and_grad(self.loss)(s.params, s.frozen, b, r),
                     lambda: (self.state_sharding(state), self.batch_sharding(batch), replicated()),
                     lambda: (replicated(), self.state_sharding(state).params))

  def model(self, state: TrainState, use_ema: bool = True) -> nnx.Module:
    """The model with the state's EMA (default) or raw parameters."""
    return nnx.merge(self.graphdef, state.ema if use_ema else state.params, state.frozen)
