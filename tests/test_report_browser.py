"""report.html in a real browser: headless Chromium renders the table and every figure, runs the
inline scripts without an error, and sorts a column on a click.

Needs /usr/bin/chromium (`apt-get install -y chromium`). Without it the test is skipped on a
workstation, and fails in CI (CI set), where a skipped browser check would hide a broken page.
The screenshot is kept next to the report as screenshot.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support.demo_runs import DEMO, make_run

from bench.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = "headless Chromium not found at /usr/bin/chromium (install it: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so the browser check must run")
    pytest.skip(message)


def _run_chromium(binary: str, profile: Path, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess:
    """Run Chromium in its own process group, so a hang is killed with all its helpers."""
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish within {timeout_s} s: {' '.join(command)}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _render_check(dom: str) -> dict[str, str]:
    match = re.search(r'<div id="render-check"([^>]*)>([^<]*)</div>', dom)
    assert match, "no render-check element in the dumped DOM"
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', match.group(1)))
    attributes["text"] = match.group(2)
    return attributes


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = _chromium()
    run_dir = make_run(tmp_path / "reports")
    result = write_report([run_dir])
    url = result.html.resolve().as_uri()
    profile = tmp_path / "chromium-profile"

    screenshot = result.out_dir / "screenshot.png"
    shot = _run_chromium(chromium, profile, f"--screenshot={screenshot}", "--window-size=1400,3000", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1400, 3000)
        grey = image.convert("L")
        # Something is drawn in the top, middle and bottom thirds (not a blank or error page).
        for top in (0, 1000, 2000):
            low, high = grey.crop((0, top, 1400, top + 1000)).getextrema()
            assert high - low > 100, f"the screenshot looks blank from y={top}"

    dumped = _run_chromium(chromium, profile, "--dump-dom", "--virtual-time-budget=5000", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    check = _render_check(dumped.stdout)
    assert check["state"] == "done", check  # the load handler ran
    assert check["errors"] == "0", check["text"]  # no script or resource error
    assert int(check["images"]) == len(result.figures) > 0, check
    assert check["images-loaded"] == check["images"], check["text"]  # every PNG decoded
    assert int(check["rows"]) == result.rows == len(DEMO), check


def test_clicking_a_header_sorts_the_summary_table(tmp_path):
    chromium = _chromium()
    result = write_report([make_run(tmp_path / "reports")])
    # The report plus a script that clicks "median" twice and records the order each time.
    probe = """
<script>
window.addEventListener('load', function () {
  var table = document.getElementById('summary');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) { return th.textContent.trim().indexOf('median') === 0; });
  var head = heads[col];
  function medians() {
    var rows = table.tBodies[0].rows;
    return Array.prototype.map.call(rows, function (r) { return r.cells[col].getAttribute('data-v'); }).join(',');
  }
  head.click(); var up = medians();
  head.click(); var down = medians();
  var out = document.createElement('pre'); out.id = 'sort-probe';
  out.textContent = 'UP=' + up + '\\nDOWN=' + down + '\\nARIA=' + head.getAttribute('aria-sort');
  document.body.appendChild(out);
});
</script>
"""
    page = result.out_dir / "sort-probe.html"
    page.write_text(result.html.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    dumped = _run_chromium(chromium, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000", page.as_uri())
    match = re.search(r'<pre id="sort-probe">UP=([^\n]*)\nDOWN=([^\n]*)\nARIA=(\w+)</pre>', dumped.stdout)
    assert match, dumped.stdout[-3000:]
    up, down = ([float(v) if v else None for v in group.split(",")] for group in match.group(1, 2))
    measured = [v for v in up if v is not None]
    assert measured == sorted(measured) and len(measured) == 7
    assert up[len(measured) :] == [None, None]  # rows without a median go last either way
    assert [v for v in down if v is not None] == sorted(measured, reverse=True)
    assert match.group(3) == "descending"


def test_a_missing_browser_skips_on_a_workstation_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(os, "access", lambda *args: False)
    monkeypatch.setattr(shutil, "which", lambda *args: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        _chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _chromium()
