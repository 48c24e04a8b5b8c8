"""The house's structure (README, "Architecture"): which subsystem may import which, no import loops, and an
inference path that loads no training or evaluation code."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Subsystem -> the subsystems it may import (besides itself). The README's architecture section draws this.
ALLOWED = {
    "configs": {"datagen", "kinemask_jax.model"},
    "datagen": {"configs"},
    "kinemask_jax.model": {"datagen"},
    "kinemask_jax.store": {"datagen", "kinemask_jax.model"},
    "kinemask_jax.outcome": {"datagen", "kinemask_jax.model", "kinemask_jax.store"},
    "kinemask_jax.training": {"datagen", "kinemask_jax.model", "kinemask_jax.store", "kinemask_jax.sampling",
                              "kinemask_jax.outcome"},
    "kinemask_jax.sampling": {"datagen", "kinemask_jax.model", "kinemask_jax.store", "kinemask_jax.outcome"},
    "kinemask_jax.evaluation": {"datagen", "kinemask_jax.model", "kinemask_jax.sampling", "kinemask_jax.store"},
}
COMMANDS = "kinemask_jax"  # the modules at the top of kinemask_jax/: the commands, which may import anything


def _modules():
  """{module name: path} of every source module of the project (tests, scripts and benchmarks aside)."""
  out = {}
  for top in ("configs", "datagen", "kinemask_jax"):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
          out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
  return out


def _imports(path: str, known: set[str], only_top_level: bool) -> set[str]:
  """Project modules a file imports (`from a import b` counts a.b when that is a module), at the top level of
  the module only, or anywhere (function-level imports included)."""
  tree = ast.parse(open(path).read())
  nodes = tree.body if only_top_level else list(ast.walk(tree))
  found = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names)
  return {m for m in found if m in known}


def _subsystem(module: str) -> str:
  parts = module.split(".")
  if parts[0] != "kinemask_jax":
    return parts[0]
  return ".".join(parts[:2]) if len(parts) > 2 or f"kinemask_jax.{parts[1]}" in ALLOWED else COMMANDS


def test_subsystems_import_only_what_the_architecture_allows():
  modules = _modules()
  bad = []
  for name, path in modules.items():
    mine = _subsystem(name) if name != "kinemask_jax" else COMMANDS
    if mine == COMMANDS:
      continue
    for other in _imports(path, set(modules), only_top_level=False):
      theirs = _subsystem(other)
      if theirs != mine and theirs not in ALLOWED[mine]:
        bad.append(f"{name} imports {other}")
  assert not bad, bad


def test_no_import_loops():
  """No loop of module-level imports between project modules (a loop makes import order matter)."""
  modules = _modules()
  graph = {name: _imports(path, set(modules), only_top_level=True) - {name} for name, path in modules.items()}
  state, loops = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        loops.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"
  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not loops, loops


def test_the_inference_path_loads_no_training_or_evaluation_code():
  """Loading shipped weights and generating a video (prompt="auto" machinery included) imports nothing of
  training/ or evaluation/, nor the input pipeline's and the trainer's libraries (grain, clu, TensorFlow).
  (optax comes with flax.nnx itself.)"""
  code = (
      "import sys, numpy as np\n"
      "from kinemask_jax import KineMaskPipeline\n"
      "import kinemask_jax.outcome.predictor\n"
      "pipe = KineMaskPipeline.from_pretrained('tiny')\n"
      "image = np.zeros((32, 32, 3), np.uint8); image[10:16, 10:16] = (215, 35, 35)\n"
      "mask = np.zeros((32, 32), bool); mask[10:16, 10:16] = True\n"
      "pipe.generate(image, mask, (0.5, 0.0), prompt=None, num_steps=1)\n"
      "bad = sorted(m for m in sys.modules if m.startswith(('kinemask_jax.training', 'kinemask_jax.evaluation',"
      " 'grain', 'clu', 'tensorflow')))\n"
      "print('LOADED', bad)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "LOADED []" in proc.stdout, proc.stdout
