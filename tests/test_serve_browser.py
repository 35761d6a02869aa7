"""The `clipforge serve` page in a real browser: Debian's headless chromium driven by Playwright.

The bundled clipforge-mini model over the bundled sample images (offline, small): type a query and
see thumbnails, upload an image and see its neighbours, classify it, open the similarity view,
drop a file, use a phone-width screen, and use a server that needs a token.

Screenshots of each state are written to the test's temporary folder, and also to
$CLIPFORGE_SCREENSHOT_DIR when it is set (that is how docs/serve/*.png are made:
`CLIPFORGE_SCREENSHOT_DIR=docs/serve pytest tests/test_serve_browser.py`).

Needs the chromium Debian package (/usr/bin/chromium, or $CLIPFORGE_CHROMIUM) and the playwright
Python package (its own browser download is never used). Without them the tests FAIL with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
from serve_helpers import LiveServer

from clipforge.serve.app import ServeOptions, create_app
from clipforge.serve.service import SearchService

CHROMIUM = os.environ.get("CLIPFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TOKEN = "browser-test-token-0123456789"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def samples_service(tmp_path_factory):
    import clipforge
    from clipforge import bundled
    from clipforge.tasks.search import SearchIndex, build_index
    from clipforge.tasks.templates import TEMPLATE_SETS

    model, preprocess, tokenizer = clipforge.load()
    out = tmp_path_factory.mktemp("index") / "samples.index"
    table = bundled.HERE / "samples" / "samples.jsonl"
    build_index(model, preprocess, tokenizer, str(table), out, model_reference={"name_or_path": "clipforge-mini"},
                num_workers=0, progress=False)
    service = SearchService(SearchIndex(out), model, preprocess, tokenizer, model_name="clipforge-mini",
                            templates=TEMPLATE_SETS["openai"])
    yield service
    service.close()


@pytest.fixture(scope="module")
def live(samples_service):
    with LiveServer(create_app(samples_service)) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's chromium package (apt-get install chromium) "
                    "or point $CLIPFORGE_CHROMIUM at a chromium binary", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"the playwright Python package is missing (pip install playwright; its browser download is "
                    f"not needed): {e}", pytrace=False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    saved: list[Path] = []

    def shoot(page, name: str, **kwargs) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), **kwargs)
        assert path.stat().st_size > 5000, f"{name}.png looks empty"
        saved.append(path)
        return path

    yield shoot
    target = os.environ.get("CLIPFORGE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for path in saved:
            shutil.copy(path, Path(target) / path.name)


def _watch(page, origin: str) -> dict[str, list[str]]:
    """Console errors, page errors and requests to anywhere but the server (there must be none)."""
    seen: dict[str, list[str]] = {"errors": [], "elsewhere": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((origin, "data:", "blob:")) else seen["elsewhere"].append(r.url))
    return seen


def _thumbnails_loaded(page, count: int) -> None:
    page.wait_for_function(
        """(n) => { const imgs = [...document.querySelectorAll('#results .card img')];
                    return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=count, timeout=TIMEOUT_MS)


def _cards(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#results .card",
        "cards => cards.map(c => ({id: Number(c.dataset.id), score: c.querySelector('.score').textContent, "
        "path: c.querySelector('.path').textContent, width: c.querySelector('img').naturalWidth}))")


def test_search_upload_classify_in_chromium(live, browser, shots, samples_service):
    from playwright.sync_api import expect

    n = len(samples_service.index)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    seen = _watch(page, live.url)
    page.goto(live.url + "/")
    expect(page.locator("#status")).to_have_text(f"{n} items · model clipforge-mini")

    # Type a query: thumbnails with scores, in the API's order.
    page.fill("#q", "a bird")
    page.press("#q", "Enter")
    expect(page.locator("#message")).to_contain_text(f"{n} results for “a bird”")
    _thumbnails_loaded(page, n)
    api = requests.get(f"{live.url}/api/search", params={"q": "a bird", "k": 24}, timeout=30).json()["results"]
    cards = _cards(page)
    assert [c["id"] for c in cards] == [r["id"] for r in api]
    assert [c["score"] for c in cards] == [f"#{i + 1} · {r['score']:.4f}" for i, r in enumerate(api)]
    assert all(c["width"] > 0 for c in cards)
    shots(page, "search")

    # Upload an image: its neighbours, itself first with score 1.
    sample = Path(samples_service.index.paths[2])
    page.set_input_files("#file", str(sample))
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#similar")).to_be_enabled()
    page.click("#similar")
    expect(page.locator("#message")).to_contain_text(f"images most like {sample.name}")
    _thumbnails_loaded(page, n)
    cards = _cards(page)
    assert cards[0]["path"] == sample.name and cards[0]["score"] == "#1 · 1.0000"
    shots(page, "upload")

    # Classify it: one bar per label, the API's probabilities.
    labels = ["a bird", "an airplane", "food", "a map of the world", "a musical instrument"]
    page.fill("#labels", ", ".join(labels))
    page.click("#classify")
    expect(page.locator("#probs li")).to_have_count(len(labels))
    expect(page.locator("#message")).to_contain_text("most likely:")
    shown = page.eval_on_selector_all("#probs li", "rows => rows.map(r => [r.querySelector('.label').textContent, "
                                                   "r.querySelector('.value').textContent])")
    api = requests.post(f"{live.url}/api/classify", files={"image": (sample.name, sample.read_bytes())},
                        data={"labels": ", ".join(labels)}, timeout=30).json()["labels"]
    assert shown == [[x["label"], f"{x['prob'] * 100:.1f}%"] for x in api]
    shots(page, "classify")

    # The similarity view: click a result, see the items most like it.
    target = cards[3]
    page.locator("#results .card").nth(3).click()
    expect(page.locator("#focus")).to_be_visible()
    expect(page.locator("#message")).to_contain_text(f"items most like {target['path']}")
    _thumbnails_loaded(page, n)
    assert _cards(page)[0]["id"] == target["id"]
    expect(page.locator("#focus")).to_be_in_viewport()
    shots(page, "similar")

    # Drag and drop a file onto the page.
    page.evaluate("""async (url) => {
        const blob = await (await fetch(url)).blob();
        const data = new DataTransfer();
        data.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
    }""", "/api/thumb/5")
    expect(page.locator("#message")).to_contain_text("image ready: dropped.jpg")
    page.click("#similar")
    expect(page.locator("#message")).to_contain_text("images most like dropped.jpg")
    assert _cards(page)[0]["id"] == 5  # its own thumbnail finds it first

    # A bad upload is reported on the page, and the page keeps working.
    page.set_input_files("#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}])
    page.click("#similar")
    expect(page.locator("#message.error")).to_contain_text("not an image")
    page.fill("#q", "food")
    page.press("#q", "Enter")
    expect(page.locator("#message")).to_contain_text("results for “food”")

    assert seen["elsewhere"] == [], seen["elsewhere"]
    assert [e for e in seen["errors"] if "400" not in e] == [], seen["errors"]  # the bad upload's 400 only
    page.close()


def test_phone_width(live, browser, shots, samples_service):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live.url + "/")
    expect(page.locator("#status")).to_contain_text("items")
    page.fill("#q", "food")
    page.press("#q", "Enter")
    _thumbnails_loaded(page, len(samples_service.index))
    # Nothing wider than the screen: no sideways scrolling, the panels stacked, two or more cards a row.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    search, image = page.locator(".panels > .panel").all()
    assert search.bounding_box()["y"] + search.bounding_box()["height"] <= image.bounding_box()["y"]
    first, second = page.locator("#results .card").all()[:2]
    assert first.bounding_box()["y"] == second.bounding_box()["y"]
    assert page.locator("#results .card").first.bounding_box()["width"] >= 120
    shots(page, "phone", full_page=True)
    page.close()


def test_page_with_a_token(samples_service, browser):
    from playwright.sync_api import expect

    with LiveServer(create_app(samples_service, ServeOptions(token=TOKEN))) as server:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url + "/")
        expect(page.locator("#token-form")).to_be_visible()  # /api/health said 401: the page asks
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#token-form")).to_be_hidden()
        expect(page.locator("#status")).to_contain_text("items")
        page.fill("#q", "a map")
        page.press("#q", "Enter")
        _thumbnails_loaded(page, len(samples_service.index))  # fetched with the token, shown as blobs
        assert all(src.startswith("blob:") for src in page.eval_on_selector_all("#results img", "i => i.map(x => x.src)"))
        page.close()

        # A token in the address fragment is used and taken out of the address bar.
        page = browser.new_page()
        page.goto(f"{server.url}/#token={TOKEN}")
        expect(page.locator("#status")).to_contain_text("items")
        assert "token" not in page.url
        page.close()
