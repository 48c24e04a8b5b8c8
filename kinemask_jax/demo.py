"""Interactive demo: `python -m kinemask_jax.demo [--pretrained=tiny|small | --workdir=W] [--describer=DIR]
[--port=8000]` starts a local web page (offline: no asset comes from the internet).

Choose a scene (an example of the repository, a new random scene from the data engine at the model's size,
or an upload), click on objects to select them (colour flood fill, drawn over them), drag an arrow from
each to set its velocity (shown in m/s, and editable), pick the text ("auto": the outcome predictor's
description, or your own), steps and seed, and Generate. For a data-engine scene the simulator's video of
the same pushes plays beside the model's, with the motion error and which objects each one hits.

Everything the page does goes through the sampling API (`KineMaskPipeline`: validation, segmentation,
arrows, sampling) and the data engine; `DemoSession` (`kinemask_jax/demo_session.py`) holds the scenes and
runs the jobs one at a time (a queue: requests never run in parallel on the CPU cores). This module is the
HTTP side: the page, its JSON API and the command line.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from datagen import cli
from kinemask_jax.demo_session import ARROW_S, KEEP_JOBS, DemoSession
from kinemask_jax.sampling.units import InputError  # a request the demo cannot serve: shown in the page

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_page", "index.html")


def make_app(session: DemoSession):
  """The FastAPI app of a session: the page, its JSON API and the generated files."""
  app = FastAPI(title="KineMask demo", docs_url=None, redoc_url=None)

  @app.exception_handler(InputError)
  async def _bad_input(request: Request, e: Exception):
    return JSONResponse({"error": str(e)}, status_code=400)

  @app.exception_handler(Exception)
  async def _server_error(request: Request, e: Exception):
    return JSONResponse({"error": f"server error: {type(e).__name__}: {e}"}, status_code=500)

  def body(d: dict, *keys):
    missing = [k for k in keys if k not in d]
    if missing:
      raise InputError(f"request: missing {missing}")
    return [d[k] for k in keys]

  @app.get("/", response_class=HTMLResponse)
  def page():
    with open(PAGE) as f:
      return f.read()

  @app.get("/api/info")
  def info():
    t, h, w, _ = session.pipe.video_shape
    return dict(frames=t, height=h, width=w, fps=session.pipe.fps, v_max=session.pipe.config.conditioning.v_max_mps,
                steps=int(session.pipe.config.diffusion.num_steps), examples=list(session.examples),
                describer=session.pipe.describer is not None, model=session.model_name, arrow_s=ARROW_S)

  @app.post("/api/scene/example")
  def example(d: dict):
    return session.describe_scene(session.example(*body(d, "name"))[0])

  @app.post("/api/scene/random")
  def random_scene(d: dict):
    return session.describe_scene(session.random_scene(d.get("seed"))[0])

  @app.post("/api/scene/upload")
  async def upload(request: Request):
    form = await request.form()
    file = form.get("file")
    if file is None or not hasattr(file, "read"):
      raise InputError("upload: no file in the form (field 'file')")
    return session.describe_scene(session.upload(await file.read(), file.filename or "upload")[0])

  @app.post("/api/select")
  def select(d: dict):
    return session.select(*body(d, "scene_id", "x", "y"))

  @app.post("/api/arrow")
  def arrow(d: dict):
    start, end = body(d, "start", "end")
    return session.velocity_from_arrow(start, end)

  @app.post("/api/velocity")
  def velocity(d: dict):
    return session.arrow_from_velocity(*body(d, "velocity"))

  @app.post("/api/prompt")
  def prompt(d: dict):
    return session.auto_prompt(*body(d, "scene_id", "objects"))

  @app.post("/api/generate")
  def generate(d: dict):
    return dict(job=session.submit(d))

  @app.get("/api/job/{job_id}")
  def job(job_id: str):
    return session.status(job_id)

  @app.get("/api/files/{job_id}/{name}")
  def files(job_id: str, name: str):
    data = session.files.get((job_id, name))
    if data is None:
      raise InputError(f"no file {job_id}/{name} (only the newest {KEEP_JOBS} jobs' videos are kept)")
    media_type = "image/gif" if name.endswith(".gif") else "video/mp4"
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'inline; filename="kinemask_{job_id}_{name}"'})

  return app


def main(argv) -> None:
  del argv
  from absl import flags
  from kinemask_jax.sampling import api
  f = flags.FLAGS
  if f.workdir is not None and f.pretrained is not None:
    raise cli.UsageError("give at most one of --workdir and --pretrained")
  if not 0 <= f.port <= 65535:
    raise cli.UsageError(f"--port: expected 0-65535 (0: any free port), got {f.port}")
  name = (f.pretrained or "tiny") if f.workdir is None else None
  if name is not None and name not in api.pretrained_names():
    raise cli.UsageError(f"--pretrained={name}: no such shipped weights; shipped: {api.pretrained_names()}")
  if f.describer is not None and not os.path.isdir(f.describer):
    raise cli.UsageError(f"--describer={f.describer}: no such directory")
  import socket
  import uvicorn
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((f.host, f.port))
  except OSError as e:
    raise cli.UsageError(f"--port={f.port}: cannot listen on {f.host}:{f.port} ({e.strerror})")
  sock.listen(128)  # before the address is printed: connections queue until uvicorn accepts them, none is refused
  pipe = (api.KineMaskPipeline.from_pretrained(name, describer=f.describer) if name else
          api.KineMaskPipeline.from_checkpoint(f.workdir, describer=f.describer))
  session = DemoSession(pipe, model_name=f"pretrained {name}" if name else os.path.abspath(f.workdir))
  host, port = sock.getsockname()[:2]
  print(f"KineMask demo ({session.model_name}, {'x'.join(map(str, pipe.video_shape[:3]))} videos): "
        f"http://{host}:{port}  (Ctrl-C stops)", flush=True)
  uvicorn.Server(uvicorn.Config(make_app(session), log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
  from absl import flags
  from kinemask_jax.sampling import api as _api
  flags.DEFINE_string("pretrained", None, "Shipped weights: tiny or small (default tiny; or --workdir).")
  flags.DEFINE_string("workdir", None, "A training workdir instead of shipped weights.")
  flags.DEFINE_string("describer", None, "Outcome-predictor workdir (kinemask_jax.train_outcome) for the 'auto' text.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
  flags.DEFINE_integer("port", 8000, "Port (0: any free port; the address is printed).")
  cli.run(main, expected=(_api.CheckpointError,))
