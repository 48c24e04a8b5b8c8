"""Writing videos: GIF (pillow), MP4 (PyAV's ffmpeg) and strip PNGs of frames side by side with arrows."""

from __future__ import annotations

import os

import numpy as np


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
  """Nearest-neighbour upscaling of uint8 [..., H, W, 3] by an integer factor."""
  if scale <= 1:
    return frames
  return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def _scale_for(height: int, target: int) -> int:
  return max(1, target // height)


def save_gif(path: str, video: np.ndarray, fps: float, target_height: int = 256) -> None:
  """uint8 [T,H,W,3] -> looping GIF, upscaled (nearest) to about `target_height` pixels."""
  from PIL import Image
  video = upscale(np.asarray(video), _scale_for(video.shape[1], target_height))
  images = [Image.fromarray(f) for f in video]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def save_mp4(path: str, video: np.ndarray, fps: float, target_height: int = 256) -> None:
  """uint8 [T,H,W,3] -> H.264 MP4 (yuv420p, so sizes are rounded up to even), upscaled like save_gif."""
  import av
  video = upscale(np.asarray(video), _scale_for(video.shape[1], target_height))
  h, w = video.shape[1:3]
  video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=round(fps))
    stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
    for frame in video:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def draw_arrow(image: np.ndarray, start_xy, delta_xy, color=(255, 255, 255), width: int = 2) -> np.ndarray:
  """A copy of uint8 [H,W,3] with an arrow from start_xy along delta_xy (pixels), outlined in black."""
  from PIL import Image, ImageDraw
  out = Image.fromarray(np.asarray(image))
  draw = ImageDraw.Draw(out)
  x0, y0 = start_xy
  x1, y1 = x0 + delta_xy[0], y0 + delta_xy[1]
  length = max(np.hypot(*delta_xy), 1e-6)
  ux, uy = delta_xy[0] / length, delta_xy[1] / length
  head = min(8.0 + 2 * width, 0.5 * length)
  wing = [(x1 - head * ux + 0.5 * head * uy, y1 - head * uy - 0.5 * head * ux),
          (x1 - head * ux - 0.5 * head * uy, y1 - head * uy + 0.5 * head * ux)]
  for c, wd in (((0, 0, 0), width + 2), (color, width)):
    draw.line([(x0, y0), (x1, y1)], fill=c, width=wd)
    draw.line([wing[0], (x1, y1), wing[1]], fill=c, width=wd)
  return np.asarray(out)


def strip(video: np.ndarray, target_height: int = 128, gap: int = 2) -> np.ndarray:
  """uint8 [T,H,W,3] -> one image [H', T*W' + gaps, 3] of the frames side by side, upscaled."""
  video = upscale(np.asarray(video), _scale_for(video.shape[1], target_height))
  t, h, w, _ = video.shape
  out = np.full((h, t * w + (t - 1) * gap, 3), 255, np.uint8)
  for i, frame in enumerate(video):
    out[:, i * (w + gap): i * (w + gap) + w] = frame
  return out


def save_png(path: str, image: np.ndarray) -> None:
  from PIL import Image
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image)).save(path)
