"""The page in a real headless browser: Debian's chromium driven by Playwright (never `playwright install`).

The browser comes from `scripts/browser.sh install` (CI runs it in .ci/run). The page serves the chapter's toy
model (trained as the README says: d_model 2, one head, no norm, so every number can be checked by hand) and a
tiny char model to switch to. The test types a prompt, checks
the layers x heads grid, clicks a token and compares the seven steps shown with `wordformer explain --json`,
moves the temperature slider with the keyboard, presses "next token" and watches the streamed token arrive,
reopens the URL to check the state round-trips, checks phone width, and asserts that no request left
127.0.0.1. Screenshots go to a temporary folder, or to ``$WORDFORMER_PAGE_SCREENSHOTS`` (the README's
docs/serve_page.png and docs/serve_steps.png were made with ``WORDFORMER_PAGE_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from serve_fixtures import serve_models, start_server  # noqa: F401  (fixtures)
from wordformer.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
NUM = re.compile(r"-?\d+\.\d+")


def find_chromium() -> str:
    """Debian's chromium; installed by the project's script when absent (skip only when that cannot work)."""
    def present() -> str | None:
        for path in (os.environ.get("WORDFORMER_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
            if path and os.access(path, os.X_OK):
                return path
        return None

    found = present()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is absent and cannot be installed here (needs root and apt-get): "
                    "run scripts/browser.sh install")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh"), "install"], capture_output=True, text=True)
    found = present()
    if not found:
        pytest.skip(f"chromium is absent and scripts/browser.sh install failed: {result.stderr.strip()[-300:]}")
    return found


TOY = ["--pairs", "--d-model", "2", "--num-heads", "1", "--num-layers", "1", "--norm", "none", "--block-size", "8",
       "--batch-size", "2", "--max-steps", "300", "--lr", "0.05", "--min-lr", "0.001", "--warmup-steps", "10",
       "--weight-decay", "0", "--no-progress"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_models):
    """The README's toy word predictor (what is statquest <eos> awesome) and the tests' char model."""
    from conftest import TOY_PAIRS

    root = tmp_path_factory.mktemp("page")
    (root / "toy.tsv").write_text(TOY_PAIRS, encoding="utf-8")
    assert main(["train", "--data", str(root / "toy.tsv"), "--out", str(root / "toy"), "--cache-dir",
                 str(root / "cache"), *TOY]) == 0
    toy = root / "toy" / "best.ckpt"
    # the same pairs with the recipe's attention: rotary positions, qk_norm and a non-default attn_scale
    assert main(["train", "--data", str(root / "toy.tsv"), "--out", str(root / "rope"), "--cache-dir",
                 str(root / "cache"), *TOY[:TOY.index("--d-model")], "--d-model", "8", "--num-heads", "2",
                 *TOY[TOY.index("--num-layers"):TOY.index("--max-steps")], "--max-steps", "40",
                 *TOY[TOY.index("--lr"):], "--positional", "rope", "--qk-norm", "--attn-scale", "0.6"]) == 0
    rope = root / "rope" / "best.ckpt"
    with start_server({"toy": toy, "char": serve_models["char"], "rope": rope}) as running:
        running.toy = toy  # type: ignore[attr-defined]
        running.rope = rope  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 800})
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        context.requests = requests  # type: ignore[attr-defined]
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("WORDFORMER_PAGE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("page-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_page(context, url: str, errors: list[str]):
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    return page


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUM.findall(text)]


def shown_numbers(page, selector: str) -> list[float]:
    """Every number the seven-steps view shows in the elements ``selector`` picks."""
    return [x for text in page.locator(f"#steps {selector}").all_inner_texts() for x in numbers(text)]


def explain_on_page(page, checkpoint: Path, layer: int, head: int, token: int, heads: int, capsys) -> dict:
    """Pick (layer, head) in the grid and the token in the token list, wait for the seven steps to show them, and
    return `wordformer explain --json` for the same choice (the prompt is the tests' "statquest is what")."""
    page.locator(f"#attention-grid .mini[data-layer='{layer}'][data-head='{head}']").click()
    page.locator(f"#tokens .tok[data-index='{token}']").click()
    page.wait_for_function(f"document.querySelector('#steps .summary') && document.querySelector('#steps .summary')"
                           f".textContent.includes('token #{token}') && document.querySelector('#steps .summary')"
                           f".textContent.includes('head {head} of {heads}')")
    assert main(["explain", "--checkpoint", str(checkpoint), "--prompt", "statquest is what", "--layer",
                 str(layer), "--head", str(head), "--token", str(token), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_page_end_to_end(browser, served, shots, capsys):
    errors: list[str] = []
    model = served.ids["toy"]
    page = open_page(browser, f"{served.base_url}/#m={quote(model)}", errors)
    assert page.locator("#model-select").input_value() == model
    assert "prompt/answer pairs" in page.locator("#model-card").inner_text()

    # type a prompt: its tokens with ids, <eos> appended for the pairs model (the answer starts after it)
    page.locator("#prompt").fill("statquest is what")
    page.wait_for_function("document.querySelectorAll('#tokens .tok').length === 4"
                           " && document.querySelector('#tokens .tok .lbl').textContent === 'statquest'")
    labels = page.locator("#tokens .tok .lbl").all_inner_texts()
    assert labels == ["statquest", "is", "what", "<eos>"]
    assert "special-eos" in page.locator("#tokens .tok").nth(3).get_attribute("class")
    assert page.locator("#tokens .answer-mark").count() == 0  # the answer starts after the last token: none yet

    # the grid holds layers x heads maps
    card = next(c for c in page.evaluate("fetch('/v1/inspect/models').then(r => r.json())")["data"] if c["id"] == model)
    layers, heads = card["num_layers"], card["num_heads"]
    page.wait_for_function(f"document.querySelectorAll('#attention-grid .mini').length === {layers * heads}")
    pairs = {(int(b.get_attribute("data-layer")), int(b.get_attribute("data-head")))
             for b in page.locator("#attention-grid .mini").all()}
    assert pairs == {(l, h) for l in range(layers) for h in range(heads)}

    # pick a head in the grid and a token in the token list: the seven steps equal `explain --json`
    layer, head, token = layers - 1, heads - 1, 2
    expected = explain_on_page(page, served.toy, layer, head, token, heads, capsys)

    def shown(field: str) -> list[float]:
        return shown_numbers(page, f"[data-field='{field}']")

    close = dict(abs=5.1e-5)
    page.locator("#full-vectors").check()  # every value of long vectors (the toy's have two anyway)
    for field in ("dot_products", "scores", "weights"):
        assert shown(field) == pytest.approx(expected[field], **close), field
    assert shown("query") == pytest.approx(expected["query"], **close)
    assert shown("keys") == pytest.approx([x for row in expected["keys"] for x in row], **close)
    assert shown("values") == pytest.approx([x for row in expected["values"] for x in row], **close)
    assert shown("summed") == pytest.approx(expected["summed"], **close)
    assert shown("residual")[-len(expected["residual"]):] == pytest.approx(expected["residual"], **close)
    page.evaluate("document.querySelector('.top').style.position = 'static'")  # no sticky header over the card
    page.locator("#steps-card").screenshot(path=str(shots / "serve_steps.png"))
    page.evaluate("document.querySelector('.top').style.position = ''")

    # hovering a cell of the big map shows the weight and the two tokens
    cell = page.locator("#big-map rect[data-weight]:not([data-weight=''])").last
    cell.hover()
    tip = page.locator("#tooltip").inner_text()
    assert "→" in tip and "weight" in tip and any(lab in tip for lab in labels)

    # the temperature slider (moved with the keyboard) changes the distribution
    def distribution() -> tuple[str, list[str]]:
        return (page.locator("#distribution-summary").inner_text(),
                [r.get_attribute("width") for r in page.locator("#distribution rect.renorm").all()])

    before = distribution()
    page.locator("#temperature").focus()
    page.keyboard.press("End")  # temperature 2
    page.wait_for_function("document.querySelector('#temperature-out').textContent === '2.00'")
    page.wait_for_function(f"document.querySelector('#distribution-summary').textContent !== {json.dumps(before[0])}")
    after = distribution()
    assert after != before
    entropy = lambda s: float(re.search(r"entropy (\d+\.\d+) nats", s).group(1))  # noqa: E731
    assert entropy(after[0]) > entropy(before[0])
    assert "T=2" in page.url
    page.keyboard.press("Home")  # temperature 0: greedy, as `wordformer generate --temperature 0`
    page.wait_for_function("document.querySelector('#temperature-out').textContent.startsWith('0 (greedy)')")

    # "next token": streamed from the page's generation endpoint, one more token, the KV cache shown;
    # the <eos> after the prompt starts the answer, and the toy's answer is the chapter's: awesome
    page.locator(f"#tokens .tok[data-index='3']").click()
    n_before = page.locator("#tokens .tok").count()
    with page.expect_response(lambda r: r.url.endswith("/v1/inspect/generate")) as streamed:
        page.locator("#next-token").click()
    assert streamed.value.headers["content-type"].startswith("text/event-stream")
    page.wait_for_function(f"document.querySelectorAll('#tokens .tok').length === {n_before + 1}")
    assert page.locator("#tokens .tok.generated .lbl").all_inner_texts() == ["awesome"]
    assert page.locator("#tokens .answer-mark").count() == 1
    assert "KV cache:" in page.locator("#cache").inner_text()
    page.wait_for_selector("#new-attention svg")  # the attention of the token that predicted it, over the cache
    assert "g=" in page.url
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "serve_page.png"))

    # the URL holds the state: a fresh page at the same address shows the same view
    url = page.url
    again = open_page(browser, url, errors)
    again.wait_for_function(f"document.querySelectorAll('#tokens .tok').length === {n_before + 1}")
    assert again.locator("#prompt").input_value() == "statquest is what"
    assert again.locator("#temperature").input_value() == "0"
    assert again.locator(f"#attention-grid .mini[data-layer='{layer}'][data-head='{head}']").get_attribute("aria-pressed") == "true"
    assert again.locator("#tokens .tok .lbl").all_inner_texts() == page.locator("#tokens .tok .lbl").all_inner_texts()
    again.close()

    # keyboard: arrow keys move along the token list
    page.locator("#tokens .tok[aria-selected='true']").focus()
    page.keyboard.press("Home")
    page.wait_for_function("document.querySelector('#tokens .tok[aria-selected=true]').dataset.index === '0'")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#tokens .tok[aria-selected=true]').dataset.index === '1'")
    assert page.evaluate("document.activeElement.dataset.index") == "1"

    # the checkpoint switcher: another model, its own card and grid
    page.locator("#model-select").select_option(served.ids["char"])
    char = next(c for c in page.evaluate("fetch('/v1/inspect/models').then(r => r.json())")["data"]
                if c["id"] == served.ids["char"])
    page.wait_for_function(f"document.querySelectorAll('#attention-grid .mini').length === "
                           f"{char['num_layers'] * char['num_heads']} && location.hash.includes('char')")
    assert "char, " in page.locator("#model-card").inner_text()

    # phone width: the main layout does not overflow sideways
    phone = browser.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.on("pageerror", lambda e: errors.append(str(e)))
    phone.goto(url)
    phone.wait_for_selector("body[data-ready='1']", timeout=20_000)
    phone.wait_for_function("document.querySelectorAll('#attention-grid .mini').length > 0")
    widths = phone.evaluate("[document.documentElement.scrollWidth, innerWidth, document.querySelector('main').scrollWidth]")
    assert widths[0] <= widths[1] and widths[2] <= widths[1], widths
    phone.screenshot(path=str(shots / "serve_phone.png"), full_page=False)
    phone.close()
    page.close()

    assert not errors, errors
    hosts = {urlsplit(u).hostname for u in browser.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, hosts
    assert all(urlsplit(u).scheme in ("http", "data", "blob") for u in browser.requests)


def test_the_steps_show_rotated_queries_and_keys(browser, served, shots, capsys):
    """With RoPE and qk_norm, steps 1-2 show q and k at every stage (projected, normalised, rotated) and step 3
    the model's own factor, each equal to `wordformer explain --json`; step 0 adds no positional vector."""
    errors: list[str] = []
    model = served.ids["rope"]
    page = open_page(browser, f"{served.base_url}/#m={quote(model)}", errors)
    page.locator("#prompt").fill("statquest is what")  # the example prompt has 4 tokens too: wait for these
    page.wait_for_function("Array.from(document.querySelectorAll('#tokens .tok .lbl')).map(e => e.textContent)"
                           ".join(' ') === 'statquest is what <eos>'")
    page.wait_for_function("document.querySelectorAll('#attention-grid .mini').length === 2")
    page.wait_for_function("document.querySelector('#steps .summary') && document.querySelector('#steps .summary')"
                           ".textContent.includes('token #3')")
    expected = explain_on_page(page, served.rope, 0, 1, 2, 2, capsys)  # layer 0, head 1 of 2, token 2
    assert [s["stage"] for s in expected["query_stages"]] == ["W x + b", "RMS-normalised per head (qk_norm)"]
    page.locator("#full-vectors").check()

    def shown(selector: str) -> list[float]:
        return shown_numbers(page, selector)

    close = dict(abs=5.1e-5)
    for k, stage in enumerate(expected["query_stages"]):
        text = page.locator(f"#steps [data-field='query_stages'][data-row='{k}']").inner_text()
        assert text.startswith(stage["stage"])
        assert shown(f"[data-field='query_stages'][data-row='{k}']") == pytest.approx(stage["value"], **close)
        keys = shown(f"[data-field='keys_stages'][data-stage='{k}']")
        assert keys == pytest.approx([x for row in expected["keys_stages"][k]["value"] for x in row], **close)
    assert shown("[data-field='query']") == pytest.approx(expected["query"], **close)
    assert shown("[data-field='keys']") == pytest.approx([x for row in expected["keys"] for x in row], **close)
    # rotation changed the numbers (the stages are not the final q and k repeated)
    assert shown("[data-field='query_stages'][data-row='1']") != pytest.approx(expected["query"], abs=1e-3)
    for field in ("dot_products", "scores", "weights"):
        assert shown(f"[data-field='{field}']") == pytest.approx(expected[field], **close), field
    steps_text = page.locator("#steps").inner_text()
    assert "rotated by its position (RoPE)" in steps_text and "attn_scale 0.6" in steps_text
    assert "+ positional encoding" not in steps_text and "RoPE adds no positional vector" in steps_text
    # the model-wide views load too: RoPE's "positional" view is the sine and cosine of each pair's angle
    page.wait_for_selector("#positional svg")
    assert page.locator("#positional svg").get_attribute("aria-label").startswith("rotary positions (RoPE)")
    page.wait_for_selector("#curves svg")
    page.evaluate("document.querySelector('.top').style.position = 'static'")
    page.locator("#steps-card").screenshot(path=str(shots / "serve_steps_rope.png"))
    page.close()
    assert not errors, errors


def test_the_page_asks_for_the_api_key(browser, served):
    """With --api-key the page's /v1 calls answer 401: the page asks for the key once and then works."""
    with start_server({"toy": served.toy}, api_key="sesame") as locked:
        page = browser.new_page()
        page.goto(f"{locked.base_url}/")
        page.wait_for_selector("#key-row:not([hidden])", timeout=20_000)
        assert page.locator("#tokens .tok").count() == 0
        page.locator("#key-input").fill("sesame")
        page.locator("#key-input").press("Enter")
        page.wait_for_function("document.querySelectorAll('#tokens .tok').length > 0")
        assert page.locator("#key-row").is_hidden()
        assert page.locator("#tokens .tok .lbl").all_inner_texts()[-1] == "<eos>"  # the pairs model's prompt
        page.close()
