"""The demo in a real browser: headless Chromium (Debian's chromium and chromium-driver, which .ci/run installs)
driven through load, an error, new random scene, click an object, drag an arrow, generate; and the command's
bad flags."""

import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server():
  """`python -m kinemask_jax.demo` on a free port (the shipped tiny weights); yields its address."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-m", "kinemask_jax.demo", "--port=0"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  address, lines, start = None, [], time.time()
  while address is None and time.time() - start < 180:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      break
    lines.append(line)
    found = re.search(r"http://[\d.]+:\d+", line)
    address = found.group(0) if found else None
  assert address, "".join(lines)[-3000:]
  yield address
  proc.terminate()
  proc.wait(30)


@pytest.fixture(scope="module")
def browser():
  if not (CHROMIUM and DRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver (bash .ci/run installs them)")
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=Service(DRIVER), options=options)
  yield driver
  driver.quit()


def _wait(driver, condition, timeout=120, what="condition", stop_on_error=False):
  start = time.time()
  while time.time() - start < timeout:
    value = condition()
    if value:
      return value
    if stop_on_error and driver.find_element("id", "error").text:
      break
    time.sleep(0.2)
  raise AssertionError(f"timed out waiting for {what}; page error: {driver.find_element('id', 'error').text!r}")


def _post(server, path, body):
  import json
  request = urllib.request.Request(server + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def _object_pixel(server, scene_id: str, image: np.ndarray):
  """A pixel of the scene's largest object that the server's selection accepts (an engine scene refuses
  the table and background)."""
  from kinemask_jax.sampling import api
  candidates = []
  for y in range(image.shape[0]):
    for x in range(image.shape[1]):
      try:
        candidates.append((int(api.mask_from_point(image, x, y).sum()), x, y))
      except api.InputError:
        continue
  for _, x, y in sorted(candidates, reverse=True):
    if _post(server, "/api/select", {"scene_id": scene_id, "x": x, "y": y})[0] == 200:
      return x, y
  raise AssertionError("no object pixel in the scene")


def _drag(driver, canvas, scale, x, y, dx_px, dy_px):
  from selenium.webdriver.common.action_chains import ActionChains
  w, h = canvas.size["width"], canvas.size["height"]
  ActionChains(driver).move_to_element_with_offset(canvas, int((x + 0.5) * scale - w / 2),
                                                   int((y + 0.5) * scale - h / 2)) \
      .click_and_hold().move_by_offset(dx_px // 2, dy_px // 2).move_by_offset(dx_px - dx_px // 2, dy_px - dy_px // 2) \
      .release().perform()


def _gif_frames(url: str) -> int:
  """Frames of a GIF, counting those pillow merged into one (identical neighbours add their durations)."""
  from PIL import Image, ImageSequence
  gif = Image.open(io.BytesIO(urllib.request.urlopen(url).read()))
  durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
  return round(sum(durations) / min(durations))


def test_the_page_in_a_browser(server, browser, tmp_path):
  d = browser
  d.get(server)
  _wait(d, lambda: d.execute_script("return state.scene !== null"), what="the first example to load")
  info = d.execute_script("return state.info")
  assert info["frames"] == 8 and "tiny" in info["model"]

  # An error: a click on the floor is answered in the page; the page goes on working.
  canvas = d.find_element("id", "canvas")
  scale = d.execute_script("return state.scale")
  _drag(d, canvas, scale, 1, 1, 0, 0)
  _wait(d, lambda: "floor or background" in d.find_element("id", "error").text, 30, "the error message")
  assert d.execute_script("return state.objects.length") == 0

  # New random scene, click an object, drag its arrow to the left.
  d.find_element("id", "random").click()
  _wait(d, lambda: d.execute_script("return state.scene.name").startswith("engine scene"), what="a random scene")
  assert not d.find_element("id", "error").is_displayed()
  image = np.array(d.execute_script("return state.scene.image"), np.uint8)
  x, y = _object_pixel(server, d.execute_script("return state.scene.id"), image)
  # A slow server: the selection answers after the mouse is released; the arrow must still count.
  d.execute_script("const f = window.fetch; window.fetch = async (...a) => { if (String(a[0]).includes('/api/select'))"
                   " await new Promise((r) => setTimeout(r, 1500)); return f(...a); };")
  _drag(d, canvas, scale, x, y, -6 * scale, 0)
  _wait(d, lambda: d.execute_script("return state.objects.length === 1 && state.objects[0].velocity[0] < 0"), 30,
        "the object's velocity from the arrow")
  row = d.find_element("css selector", "#objects .object")
  assert float(row.find_elements("css selector", "input.v")[0].get_attribute("value")) < 0

  steps = d.find_element("id", "steps")
  steps.clear()
  steps.send_keys("4")
  d.find_element("id", "generate").click()
  _wait(d, lambda: d.find_element("id", "status").text.startswith("done"), 300, "the generated video", True)
  generated = d.find_element("id", "generated").get_attribute("src")
  assert _gif_frames(generated) == info["frames"]
  truth = d.find_element("id", "truth-panel")
  assert truth.is_displayed() and _gif_frames(d.find_element("id", "truth").get_attribute("src")) == info["frames"]
  label = d.execute_script("return state.objects[0].label")
  assert f"pushed: {label}" in d.find_element("id", "truth-score").text
  # The simulator ran the user's push: its pushed object left its place.
  from PIL import Image, ImageSequence
  gif = Image.open(io.BytesIO(urllib.request.urlopen(d.find_element("id", "truth").get_attribute("src")).read()))
  frames = [np.asarray(f.convert("RGB"), np.int32) for f in ImageSequence.Iterator(gif)]
  assert np.abs(frames[0] - frames[-1]).mean() > 0.5
  assert "motion error" in d.find_element("id", "generated-score").text
  # A typed speed beyond the model's range: the message shows, the field goes back to the velocity in use.
  before = d.execute_script("return state.objects[0].velocity[0]")
  from selenium.webdriver.common.keys import Keys
  field = d.find_element("css selector", "#objects .object input.v")
  field.send_keys(Keys.CONTROL, "a")  # (clear() would fire a change of its own)
  field.send_keys("9\n")
  _wait(d, lambda: "beyond the model's range" in d.find_element("id", "error").text, 30, "the speed error")
  field = d.find_element("css selector", "#objects .object input.v")
  assert float(field.get_attribute("value")) == before == d.execute_script("return state.objects[0].velocity[0]")
  shot = os.environ.get("KINEMASK_DEMO_SCREENSHOT") or str(tmp_path / "demo.png")
  d.save_screenshot(shot)
  assert os.path.getsize(shot) > 10_000


def test_bad_requests_are_answered_not_fatal(server):
  """Bad requests get a 400 with a message; the server keeps serving."""
  import json
  post = lambda path, body: _post(server, path, body)
  scene = post("/api/scene/example", {"name": "tiny_1"})[1]["id"]
  assert post("/api/scene/example", {"name": "nope"}) == (400, {"error": "example 'nope': not one of ['tiny_1', 'tiny_2']"})
  code, answer = post("/api/arrow", {"start": [10, 10], "end": [100, 10]})
  assert code == 400 and "beyond the model's range" in answer["error"]
  code, answer = post("/api/generate", {"scene_id": scene, "objects": [], "steps": 4})
  assert code == 400 and "select at least one object" in answer["error"]
  code, answer = post("/api/generate", {"scene_id": scene, "objects": [{"x": 23, "y": 14, "velocity": [1, 0]}],
                                        "steps": 0})
  assert code == 400 and "steps" in answer["error"]
  request = urllib.request.Request(server + "/api/scene/upload", b"--x\r\nContent-Disposition: form-data; "
                                   b"name=\"file\"; filename=\"a.txt\"\r\n\r\nnot an image\r\n--x--\r\n",
                                   {"Content-Type": "multipart/form-data; boundary=x"})
  with pytest.raises(urllib.error.HTTPError) as e:
    urllib.request.urlopen(request)
  assert e.value.code == 400 and "not an image" in json.load(e.value)["error"]
  assert post("/api/select", {"scene_id": scene, "x": 23, "y": 14})[0] == 200


def test_demo_command_bad_flags():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for args, message in ((["--port=70000"], "--port: expected 0-65535"), (["--pretrained=huge"], "--pretrained=huge"),
                        (["--pretrained=tiny", "--workdir=/x"], "at most one of --workdir and --pretrained")):
    proc = subprocess.run([sys.executable, "-m", "kinemask_jax.demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
