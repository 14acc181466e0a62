"""Each stage's HTML report opened in headless Chromium: every image loads, no console errors.

Runs where Chromium is installed (``apt-get install chromium``; `.ci/run` tries to), skipped
with the reason elsewhere. Screenshots go to ``$FNERF_SCREENSHOT_DIR`` when it is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.train_stage import run_train_stage
from tests.test_faults import copy_stores, small_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install "
                                                         "chromium to run the browser check)")

#: appended to a copy of the report: after load, the title says how many images decoded
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = "IMAGES " + ok + "/" + imgs.length;
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120)


def check_report(report: Path, shot_name: str, tmp_path: Path) -> None:
    probe = tmp_path / f"probe-{shot_name}.html"
    probe.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    result = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    title = re.search(r"<title>IMAGES (\d+)/(\d+)</title>", result.stdout)
    assert title, f"{report}: the page did not finish loading: {result.stderr[-1500:]}"
    ok, total = map(int, title.groups())
    assert total > 0 and ok == total, f"{report}: {total - ok} of {total} images did not load"
    errors = [line for line in result.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "error" in line.lower())]
    assert not errors, errors
    shots = Path(os.environ.get("FNERF_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    chromium("--window-size=1280,1600", f"--screenshot={shots / f'{shot_name}.png'}",
             report.as_uri())
    assert (shots / f"{shot_name}.png").stat().st_size > 10_000


def test_every_stage_report_loads_in_a_browser(tiny_stores, tmp_path):
    from pipeline.evaluation.stage import EvaluateConfig, run_evaluate_stage

    renders, features = copy_stores(tiny_stores, tmp_path)
    root = Path(tiny_stores[0]).parent
    check_report(root / "rep-render" / "index.html", "render", tmp_path)
    check_report(root / "rep-distill" / "index.html", "distill-cache", tmp_path)
    run_train_stage(small_config((renders, features), tmp_path))
    check_report(tmp_path / "reports" / "train" / "t" / "index.html", "train", tmp_path)
    out = tmp_path / "rep-eval"
    run_evaluate_stage(EvaluateConfig(
        category="chair", run=str(tmp_path / "runs" / "t"), pixelnerf_run="",
        renders=str(renders), features=str(features), n_pairs=4, eval_size=16, n_views=1,
        nvs_objects=1, device="cpu", report_dir=str(out), progress=False))
    check_report(out / "index.html", "evaluate", tmp_path)
