"""The Gradio demo: served once per module on 127.0.0.1 with the converted fixture model, driven through
``gradio_client`` and in headless Chromium, and checked against the ``"visual-grounding"`` pipeline's own boxes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = REPO_ROOT / "clipvg_hf" / "examples" / "vg2.jpg"
EXPRESSIONS = ["the pink cake on the left", "the chocolate cake with strawberries"]
ARTIFACTS = REPO_ROOT / "outputs" / "test_artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)


@pytest.fixture(scope="module")
def served(converted_dir):
    """The app on a free loopback port (no share link, no analytics), and the pipeline behind it."""
    from clipvg_hf.app import build_demo, load_grounder

    grounder = load_grounder(str(converted_dir))
    demo = build_demo(grounder)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True)
    try:
        yield grounder, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def expected(served) -> list[dict]:
    """The pipeline's boxes for the test image and expressions (what the app must show)."""
    grounder, _ = served
    return grounder(str(IMAGE), text=EXPRESSIONS)


def expected_rows(results: list[dict]) -> list[list]:
    corners = ("xmin", "ymin", "xmax", "ymax")
    return [[i + 1, r["label"], *(r["box"][k] for k in corners)] for i, r in enumerate(results)]


def assert_rows_match(rows: list[list], results: list[dict]) -> None:
    """Table rows (number, expression, x1, y1, x2, y2) equal the pipeline's boxes to the table's 2 decimals."""
    want = expected_rows(results)
    assert [[int(float(r[0])), str(r[1])] for r in rows] == [w[:2] for w in want]
    shown = np.asarray([[float(v) for v in r[2:]] for r in rows])
    np.testing.assert_allclose(shown, np.asarray([w[2:] for w in want]), atol=0.006, rtol=0)


def on_outline(box: dict, x: int, y: int, width: int) -> bool:
    """Whether pixel (x, y) lies on the outline band PIL draws for `box` (`width` pixels inward, 1 px slack)."""
    x1, y1, x2, y2 = (box[k] for k in ("xmin", "ymin", "xmax", "ymax"))
    inside = x1 - 1 <= x <= x2 + 1 and y1 - 1 <= y <= y2 + 1
    return inside and min(x - x1, x2 - x, y - y1, y2 - y) <= width


def assert_boxes_drawn(drawn: Image.Image, results: list[dict]) -> None:
    """The output image is the input's size and each box's left, right and bottom edges carry its colour (or the
    colour of a later box drawn over the same pixel: the tiny random model puts all boxes nearly on top of each other).
    """
    from clipvg_hf.app import COLOURS, outline_width

    assert drawn.size == Image.open(IMAGE).size
    pixels = np.asarray(drawn.convert("RGB")).astype(int)
    width = outline_width(drawn.size)
    for result in results:
        box = result["box"]
        x1, y1 = max(round(box["xmin"]), 0) + width // 2, max(round(box["ymin"]), 0)
        x2, y2 = min(round(box["xmax"]), drawn.width - 1) - width // 2, min(round(box["ymax"]), drawn.height - 1)
        ym, xm = (y1 + y2) // 2, (x1 + x2) // 2
        for x, y in ((x1, ym), (x2, ym), (xm, y2 - width // 2)):
            top = max(j for j, r in enumerate(results) if on_outline(r["box"], x, y, width))
            assert np.abs(pixels[y, x] - COLOURS[top]).max() <= 3, (result["label"], (x, y), pixels[y, x], top)


def test_ground_and_its_messages(served, expected):
    from clipvg_hf.app import ground, parse_expressions, truncation_notes

    grounder, _ = served
    images_seen = []  # the vision tower's batch sizes: the image is encoded once for both expressions
    embeddings = grounder.model.clip.vision_model.embeddings
    hook = embeddings.register_forward_hook(lambda module, args, output: images_seen.append(len(output)))
    try:
        drawn, rows, model_input, message = ground(grounder, str(IMAGE), "\n" + "\n".join(EXPRESSIONS) + "\n", True)
    finally:
        hook.remove()
    assert images_seen == [1]
    assert_rows_match(rows, expected)
    assert_boxes_drawn(drawn, expected)
    side = grounder.processor.image_processor.size["longest_edge"]
    assert model_input.size == (side, side)
    # 1024x768 -> 224x168, centred; the padding is 0 after normalisation, so it shows as ImageNet's mean colour
    letterbox = np.asarray(model_input).astype(int)
    for bar in (letterbox[:28], letterbox[-28:]):
        assert np.abs(bar - np.array([124, 116, 104])).max() <= 1
    assert np.abs(letterbox[28:-28] - np.array([124, 116, 104])).max() > 50
    assert message == "2 box(es), one per expression."
    assert ground(grounder, str(IMAGE), EXPRESSIONS[0], False)[2] is None
    for text, words in (("  \n ", "Write a referring expression"), ("a\n\nb", "Line 2 is empty")):
        with pytest.raises(gr.Error, match=words):
            parse_expressions(text)
    long = "the man " + "who stands next to the red car " * 12
    notes = truncation_notes(grounder.processor.tokenizer, ["short", long])
    assert len(notes) == 1 and notes[0].startswith("Expression 2 has ") and "more than the 77" in notes[0]
    assert "“the man who stands next to the red car" in notes[0] and "is cut off" in notes[0]


def test_gradio_client_flow_matches_the_pipeline(served, expected, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    _, url = served
    client = Client(url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
    drawn, table, model_input, message = client.predict(
        handle_file(str(IMAGE)), "\n".join(EXPRESSIONS), False, api_name="/ground"
    )
    assert table["headers"] == ["#", "expression", "x1", "y1", "x2", "y2"]
    assert_rows_match(table["data"], expected)
    assert_boxes_drawn(Image.open(drawn), expected)
    assert model_input is None and "2 box(es)" in message
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not pixels")
    with pytest.raises(AppError, match="'notes.png' is not an image"):
        client.predict(handle_file(str(not_an_image)), "the cake", False, api_name="/ground")
    with pytest.raises(AppError, match="Write a referring expression"):
        client.predict(handle_file(str(IMAGE)), "   ", False, api_name="/ground")


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.slow
@pytest.mark.skipif(
    chromium_paths() is None,
    reason="Chromium and chromedriver are not installed (apt-get install chromium chromium-driver, as .ci/run does)",
)
def test_browser_upload_two_expressions_and_read_the_result(served, expected, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    _, url = served
    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        upload.send_keys(str(IMAGE))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        textbox = driver.find_element(By.CSS_SELECTOR, "#expressions textarea")
        textbox.send_keys("\n".join(EXPRESSIONS))
        assert not driver.find_elements(By.CSS_SELECTOR, "#model-input img")
        driver.find_element(By.CSS_SELECTOR, "#show-input input[type=checkbox]").click()  # the model input on request
        driver.find_element(By.CSS_SELECTOR, "#ground").click()
        wait.until(lambda d: EXPRESSIONS[1] in d.find_element(By.ID, "box-table").text)
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#model-input img")))
        output = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#output-image img")))
        rows = [
            [
                cell.get_attribute("textContent").strip()
                for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")
            ]
            for row in driver.find_elements(By.CSS_SELECTOR, "#box-table [role=row]")
        ]
        rows = [row for row in rows if row]  # the header row has column headers, no grid cells
        assert_rows_match(rows, expected)
        source = output.get_attribute("src")
        drawn_path = tmp_path / "drawn.png"
        with urllib.request.urlopen(source, timeout=30) as response:  # the file the page displays
            drawn_path.write_bytes(response.read())
        assert_boxes_drawn(Image.open(drawn_path), expected)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "app_browser.png"
        assert driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")
    finally:
        driver.quit()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from clipvg_hf.commands.app import main

    for argv, words in (
        (["--port", "0", "--model", "org/name"], "--port must be between 1 and 65535"),
        ([], "--model is required"),
        (["--model", str(tmp_path / "missing")], "missing: no such model folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and words in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --model {tmp_path / 'empty'}: ") and error.count("\n") == 1


def test_an_upload_over_the_pixel_limit_is_refused_in_words(tmp_path):
    """A 14000 x 14000 JPEG of a few hundred bytes: refused from its header (PIL's limit, the one data.decode uses)."""
    from clipvg_hf.app import open_upload

    from utils.bomb_images import huge_header_jpeg

    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(huge_header_jpeg())
    with pytest.raises(gr.Error) as error:
        open_upload(str(bomb))
    assert "'bomb.jpg' is not an image this app can read" in str(error.value) and "decompression bomb" in str(
        error.value
    )
