"""Check a tessera report: self-contained (no external resource), every image a valid PNG of the
size its tag says; then load it in headless Chromium (Debian's chromium) and read back what the
browser decoded and the ROI count it shows. Prints JSON; exits 1 on a failed check.

Usage: check_report.py REPORT.html [SCREENSHOT.png]
"""
import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser

path = sys.argv[1]
screenshot = sys.argv[2] if len(sys.argv) > 2 else None
html = open(path, encoding="utf-8").read()
problems = []


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.external, self.ids, self._id = [], [], {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key)
            if v is not None and not v.startswith("data:") and not v.startswith("#"):
                self.external.append(f"<{tag} {key}={v[:60]}>")
        if tag == "img":
            self.images.append(a)
        self._id = a.get("id")

    def handle_data(self, data):
        if self._id:
            self.ids[self._id] = data.strip()
            self._id = None


page = Page()
page.feed(html)
if page.external:
    problems.append(f"external resources: {page.external}")


def png_ok(data, width, height):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "no PNG signature"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            return f"bad CRC in {kind}"
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            if (w, h) != (width, height) or (depth, color) != (8, 2):
                return f"IHDR {w}x{h} depth {depth} color {color}, tag says {width}x{height} RGB"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    if len(zlib.decompress(idat)) != height * (1 + 3 * width):
        return "pixel data of the wrong length"
    return None


for i, a in enumerate(page.images):
    src = a.get("src", "")
    if not src.startswith("data:image/png;base64,"):
        problems.append(f"image {i} is not an inline PNG")
        continue
    err = png_ok(base64.b64decode(src.split(",", 1)[1]), int(a["width"]), int(a["height"]))
    if err:
        problems.append(f"image {i} ({a.get('alt', '')[:40]}): {err}")

browser = shutil.which("chromium") or shutil.which("chromium-browser")
decoded = None
if browser is None:
    problems.append("no chromium: install Debian's chromium (scripts/test.sh does)")
else:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=5000"]
    url = "file://" + os.path.abspath(path)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-images-decoded="(\d+)/(\d+)"', dom)
    decoded = m.group(0) if m else None
    if not m or m.group(1) != m.group(2) or int(m.group(2)) != len(page.images):
        problems.append(f"Chromium decoded {decoded} of {len(page.images)} images")
    shown = re.search(r'id="roi-count">(\d+)<', dom)
    if not shown or shown.group(1) != page.ids.get("roi-count"):
        problems.append("Chromium does not show the ROI count")
    if screenshot:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--hide-scrollbars",
                            "--window-size=1000,2300", f"--screenshot={os.path.abspath(screenshot)}", url],
                           capture_output=True, timeout=120)
        if not os.path.exists(screenshot) or open(screenshot, "rb").read(8) != b"\x89PNG\r\n\x1a\n":
            problems.append("Chromium made no screenshot")

print(json.dumps({"images": len(page.images), "roi_count": int(page.ids.get("roi-count", -1)),
                  "accepted_count": int(page.ids.get("accepted-count", -1)),
                  "chromium_decoded": decoded, "problems": problems}))
sys.exit(1 if problems else 0)
