"""Load a page in headless Chromium and report what its scripts saw: console errors, uncaught
exceptions, failed resource loads, and the page's own figure check (data-figures)."""

import re
import shutil
import subprocess

PROBE = """<script>
(function () {
  const errors = [];
  const note = m => errors.push(String(m));
  const original = console.error;
  console.error = function (...a) { note("console.error: " + a.join(" ")); original(...a); };
  window.addEventListener("error", e => note(e.message || ("failed to load " +
      (e.target && (e.target.src || e.target.href)))), true);
  window.addEventListener("unhandledrejection", e => note("rejection: " + e.reason));
  window.addEventListener("load", () => setTimeout(() => {
    document.body.dataset.errors = JSON.stringify(errors);
  }, 0));
})();
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load(path, tmp_path) -> dict:
    """Copy of the page with the probe first in <head>, rendered; returns errors and figures."""
    page = path.read_text()
    probed = tmp_path / ("probed-" + path.name)
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    out = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    dom = out.stdout
    errors = re.search(r'data-errors="([^"]*)"', dom)
    figures = re.search(r'data-figures="(\d+)/(\d+)"', dom)
    import html
    import json

    return {"errors": json.loads(html.unescape(errors.group(1))) if errors else None,
            "figures": (int(figures.group(1)), int(figures.group(2))) if figures else None}
