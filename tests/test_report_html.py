"""The batch report rendered in headless Chromium: tables with units, every figure decoded,
nothing fetched from outside, and a non-blank page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from test_batch_support import blob_scan, cine_scan, make_bundle

from medcnn.batch import run_batch
from medcnn.io import write_volume

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

#: Appended to a *copy* of the report: records whether each image decoded (the report has no script).
PROBE = ('<script>window.addEventListener("load",()=>{for(const i of document.images){i.setAttribute('
         '"data-decoded",i.complete&&i.naturalWidth>0?i.naturalWidth+"x"+i.naturalHeight:"no")}'
         'document.body.setAttribute("data-probe","done")})</script>')


def _chromium() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) or (name if Path(name).is_file() else None)
        if path:
            return path
    pytest.skip("headless Chromium not installed (apt-get install -y chromium); cannot render the HTML report")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    bundle = make_bundle(root / "bundle")
    write_volume(blob_scan(seed=1), root / "scan.nii.gz")
    write_volume(cine_scan(n_frames=3), root / "cine.nii.gz")
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    out = root / "out"
    res = run_batch([root / "scan.nii.gz", root / "cine.nii.gz", root / "broken.nii.gz"], model=bundle, out=out,
                    progress=False)
    assert res.exit_code == 2 and res.n_ok == 2
    return out


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    chromium = _chromium()
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    # self-contained: nothing to fetch, every image inline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    assert "<link" not in html and "<script" not in html
    n_imgs = len(re.findall(r"<img ", html))
    assert n_imgs == 3  # two overlays + one cine volume curve
    assert len(re.findall(r'src="data:image/png;base64,', html)) == n_imgs
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile1'}",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-probe="done"' in dom, dom[-2000:]
    decoded = re.findall(r'data-decoded="([^"]*)"', dom)
    assert len(decoded) == n_imgs and "no" not in decoded
    assert all(int(d.split("x")[0]) > 200 and int(d.split("x")[1]) > 100 for d in decoded)
    assert dom.count("<table") >= 4  # summary, errors, per-case tables
    for unit in ("LV EDV (mL)", "LV EF (%)", "LV mass (g)", "volume (mL)", "LV blood pool (mL)"):
        assert unit in dom, unit
    assert '<span class="qc">' in dom  # QC flags highlighted
    assert '<tr class="error">' in dom and "broken" in dom
    assert "model sha256" in dom and "input hash" in dom and "config hash" in dom

    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                    f"--screenshot={shot}", "--window-size=1200,2000", (report_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    img = mpimg.imread(str(shot))
    assert img.shape[:2] == (2000, 1200)
    rgb = img[..., :3]
    assert (rgb.mean(axis=-1) < 0.9).mean() > 0.05  # text, tables and figures, not a blank page
    assert rgb.std() > 0.1
    np.testing.assert_array_less(0.5, rgb.mean())  # white page background


#: records the page's layout width after load (horizontal overflow = a table or figure too wide)
WIDTH_PROBE = ('<script>window.addEventListener("load",()=>{document.body.setAttribute("data-width",'
               'document.documentElement.scrollWidth+"/"+window.innerWidth)})</script>')


@pytest.mark.parametrize("width", [1280, 700])
def test_report_reads_at_two_widths(report_dir, tmp_path, width):
    """Screenshots at a desktop and a narrow width: no horizontal overflow, figures scaled, the
    display convention stated, provenance once for the report and per case only what differs."""
    chromium = _chromium()
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("<dt>model sha256</dt>") == 1 and html.count("<dt>library versions</dt>") == 1
    assert html.count("<dt>input hash</dt>") == 2  # one per computed case
    assert "patient&#x27;s left is on the image&#x27;s right" in html  # the display convention, stated
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", WIDTH_PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p1'}",
                          f"--window-size={width},1600",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-width="(\d+)/(\d+)"', dom)
    assert m, dom[-1500:]
    assert int(m.group(1)) <= int(m.group(2)) + 1, f"page {m.group(1)} px wide in a {m.group(2)} px window"
    shot = tmp_path / f"shot_{width}.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}",
                    f"--window-size={width},1600", (report_dir / "report.html").as_uri()], capture_output=True,
                   timeout=120)
    img = mpimg.imread(str(shot))[..., :3]
    assert img.shape[:2] == (1600, width)
    assert (img.mean(axis=-1) < 0.9).mean() > 0.03 and img.std() > 0.1
    keep = os.environ.get("MEDCNN_KEEP_SCREENSHOTS")
    if keep:  # for looking at them: MEDCNN_KEEP_SCREENSHOTS=DIR pytest tests/test_report_html.py
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
