"""A Gradio demo of the ``"visual-grounding"`` pipeline: an image and referring expressions in, boxes out.

    clipvg-app --model DIR_OR_HUB_ID [--port 7860] [--host 127.0.0.1]
    python -m clipvg_hf.app --model DIR_OR_HUB_ID

Upload an image (or pick an example), write one referring expression per line and press *Ground*: the app draws one
coloured box per expression, lists the boxes in image pixels and, on request, shows the letterboxed picture the model
sees. The image is encoded once for all its expressions (the pipeline batches them). Also the ``app.py`` of a model's
Space (``push_to_hub.py space``): there ``clipvg_hf`` is not installed, so the pipeline comes from the
``grounding_pipeline/`` folder beside this file and the model from its repo's code (``trust_remote_code=True``); the
model id is read from ``space_config.json``.

``--dtype auto`` (the default) runs the model in bf16 where the hardware has bf16 units (a CPU with AMX or
AVX512-BF16, as CPU Spaces on Xeons have, or a bf16 GPU; the box head stays fp32) and in fp32 elsewhere; ``fp32``
is the exact path, ``bf16`` forces bf16 and ``int8`` (CPU only) quantises the linear layers to dynamic int8.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine unless asked

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import PIL.ImageDraw  # noqa: E402
import PIL.ImageFont  # noqa: E402
import PIL.ImageOps  # noqa: E402
import torch  # noqa: E402
from transformers import pipeline  # noqa: E402

try:
    from clipvg_hf.errors import UsageError, first_line
    from clipvg_hf.pipelines import TASK, register_pipelines

    REMOTE_CODE = False
except ImportError:  # a Space: the pipeline code is staged beside this file, the model brings its own code
    from grounding_pipeline.errors import UsageError, first_line
    from grounding_pipeline.pipelines import TASK, register_pipelines

    REMOTE_CODE = True

__all__ = ["build_demo", "ground", "load_grounder", "parse_args", "parse_expressions", "serve"]

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
SPACE_CONFIG = HERE / "space_config.json"
TABLE_HEADERS = ["#", "expression", "x1", "y1", "x2", "y2"]
COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
)
#: Example images (files under ``examples/``) with expressions to try; licences in ``examples/LICENSES.md``.
EXAMPLES = (
    ("vg1.jpg", "the giraffe\nthe rocks behind the giraffe"),
    ("vg2.jpg", "the pink cake on the left\nthe chocolate cake with strawberries\nthe two knives"),
    ("coco_060623.jpg", "girl eating with a spoon\nthe bowl with a candle"),
)


def load_grounder(model: str, device: str | int | None = None, dtype: str | torch.dtype | None = None):
    """The ``"visual-grounding"`` pipeline for a CLIP-VG folder or Hub id, its model in ``dtype`` (``"auto"``,
    ``"fp32"``, ``"bf16"``, ``"int8"`` or a ``torch.dtype``; None: fp32).

    With the package installed the model goes through its checked loading path (a missing folder is "not found";
    missing or non-finite weights are refused); in a Space it comes from its repo's code."""
    register_pipelines()
    target = torch.device("cpu" if device is None else f"cuda:{device}" if isinstance(device, int) else device)
    if REMOTE_CODE:
        if dtype == "int8":  # loaded in fp32, then the linear layers quantised (the model's own code, CPU only)
            grounder = pipeline(TASK, model=model, device=device, trust_remote_code=True, dtype=torch.float32)
            grounder.model.to_inference_dtype(torch.qint8)
            return grounder
        if dtype in (None, "fp32"):
            dtype = torch.float32
        elif not isinstance(dtype, torch.dtype):  # the Space has no clipvg_hf.precision: the CPU flags decide
            dtype = torch.bfloat16 if dtype == "bf16" or _has_bf16_units(target) else torch.float32
        return pipeline(TASK, model=model, device=device, trust_remote_code=True, dtype=dtype)
    from clipvg_hf.loading import load_model_and_processor
    from clipvg_hf.precision import resolve_dtype

    # the precision note comes after a successful load: a model that cannot load is one error line, nothing else
    loaded, processor = load_model_and_processor(model, "--model", dtype=resolve_dtype(dtype, target, note=False))
    resolve_dtype(dtype, target)
    return pipeline(TASK, model=loaded, processor=processor, device=device)


def _has_bf16_units(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (a CPU with AMX or AVX512-BF16, a bf16 GPU), for a Space."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def parse_expressions(text: str | None) -> list[str]:
    """One expression per line; blank lines around them are ignored, a blank line between them is an error."""
    lines = [line.strip() for line in (text or "").strip().splitlines()]
    if not lines:
        raise gr.Error("Write a referring expression (one per line), e.g. 'the man on the left'.")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise gr.Error(f"Line {number} is empty: write one referring expression per line, without blank lines.")
    return lines


def explain_bad_uploads(component: gr.Image) -> gr.Image:
    """Make an image input say in words that an upload is not an image.

    The stock component opens the upload before the app sees it, so a text file fails with a bare decoder error.
    The check is wrapped on this instance: a subclass would make Gradio write a ``.pyi`` stub next to this module.
    """
    stock = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return stock(payload)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            name = getattr(payload, "orig_name", None) or Path(getattr(payload, "path", "") or "upload").name
            reason = type(error).__name__
            raise gr.Error(f"The upload {name!r} is not an image this app can read ({reason}).") from None

    component.preprocess = preprocess
    return component


def open_upload(path: str | None) -> PIL.Image.Image:
    """The uploaded file as an RGB image, EXIF-rotated like the pipeline loads it; a clear error when it is none."""
    if path is None:
        raise gr.Error("Upload an image, or pick one of the examples.")
    try:
        with PIL.Image.open(path) as image:
            return PIL.ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise gr.Error(f"The upload {Path(path).name!r} is not an image this app can read ({error}).") from None


def truncation_notes(tokenizer: Any, expressions: list[str]) -> list[str]:
    """One note per expression longer than CLIP's text context, saying which words the model does not read."""
    limit = tokenizer.model_max_length
    notes = []
    for number, expression in enumerate(expressions, start=1):
        ids = tokenizer(" ".join(expression.split()).lower(), verbose=False)["input_ids"]
        if len(ids) <= limit:
            continue
        kept = tokenizer.decode(ids[1 : limit - 1]).strip()
        dropped = tokenizer.decode(ids[limit - 1 : -1]).strip()
        notes.append(
            f"Expression {number} has {len(ids)} tokens, more than the {limit} CLIP reads: the model sees "
            f"only “{kept}”; “{dropped}” is cut off."
        )
    return notes


def outline_width(size: tuple[int, int]) -> int:
    """Line width of the drawn boxes, in pixels, for an image of `size`."""
    return max(2, round(max(size) / 250))


def draw_results(image: PIL.Image.Image, results: list[dict[str, Any]]) -> PIL.Image.Image:
    """A copy of the image with one coloured box per expression and its number and text on a filled tag."""
    canvas = image.copy()
    draw = PIL.ImageDraw.Draw(canvas)
    line = outline_width(image.size)
    font = PIL.ImageFont.load_default(size=max(12, round(max(image.size) / 45)))
    for index, result in enumerate(results):
        colour = COLOURS[index % len(COLOURS)]
        box = result["box"]
        corners = (box["xmin"], box["ymin"], box["xmax"], box["ymax"])
        draw.rectangle(corners, outline=colour, width=line)
        label = result["label"] if len(result["label"]) <= 40 else result["label"][:39] + "…"
        tag = f"{index + 1}: {label}"
        left, top, right, bottom = draw.textbbox((0, 0), tag, font=font)
        x, y = corners[0], max(0.0, corners[1] - (bottom - top) - 2 * line)
        draw.rectangle((x, y, x + right - left + 2 * line, y + bottom - top + 2 * line), fill=colour)
        draw.text((x + line, y + line - top), tag, fill=(255, 255, 255), font=font)
    return canvas


def letterboxed_input(processor: Any, image: PIL.Image.Image) -> PIL.Image.Image:
    """The model's input picture: the letterboxed canvas with the normalisation undone."""
    image_processor = processor.image_processor
    pixels = image_processor(images=image, return_tensors="np")["pixel_values"][0]
    mean = np.asarray(image_processor.image_mean).reshape(3, 1, 1)
    std = np.asarray(image_processor.image_std).reshape(3, 1, 1)
    rgb = np.clip((pixels * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return PIL.Image.fromarray(rgb)


def box_table(results: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per expression: number, text and corners in image pixels (2 decimals)."""
    return [
        [index + 1, result["label"], *(round(result["box"][k], 2) for k in ("xmin", "ymin", "xmax", "ymax"))]
        for index, result in enumerate(results)
    ]


def ground(grounder: Any, image_path: str | None, text: str | None, show_input: bool = False):
    """The demo's action: boxes drawn on the image, the box table, the model input (or None) and notes."""
    expressions = parse_expressions(text)
    image = open_upload(image_path)
    results = grounder(image, text=expressions)
    notes = truncation_notes(grounder.processor.tokenizer, expressions)
    model_input = letterboxed_input(grounder.processor, image) if show_input else None
    message = "\n".join(f"- {note}" for note in notes) if notes else f"{len(results)} box(es), one per expression."
    return draw_results(image, results), box_table(results), model_input, message


def build_demo(grounder: Any, title: str = "CLIP-VG visual grounding") -> gr.Blocks:
    """The Blocks app around a loaded pipeline (one API endpoint, ``/ground``)."""
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\nUpload an image, write one referring expression per line, press **Ground**. "
            "CLIP-VG returns exactly one box per expression."
        )
        with gr.Row():
            with gr.Column():
                image = explain_bad_uploads(
                    gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], elem_id="input-image")
                )
                text = gr.Textbox(lines=4, label="Referring expressions, one per line", elem_id="expressions")
                show_input = gr.Checkbox(label="Show the letterboxed model input", value=False, elem_id="show-input")
                button = gr.Button("Ground", variant="primary", elem_id="ground")
            with gr.Column():
                drawn = gr.Image(type="pil", format="png", label="Boxes", interactive=False, elem_id="output-image")
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    datatype=["number", "str", "number", "number", "number", "number"],
                    label="Boxes in image pixels",
                    interactive=False,
                    elem_id="box-table",
                )
                message = gr.Markdown(elem_id="message")
                model_input = gr.Image(
                    type="pil",
                    format="png",
                    label="Model input (letterboxed)",
                    interactive=False,
                    visible=False,
                    elem_id="model-input",
                )
        examples = [[str(EXAMPLES_DIR / name), text_] for name, text_ in EXAMPLES if (EXAMPLES_DIR / name).is_file()]
        if examples:
            gr.Examples(examples, inputs=[image, text], label="Examples (licences: examples/LICENSES.md)")
        button.click(
            lambda *args: ground(grounder, *args),
            inputs=[image, text, show_input],
            outputs=[drawn, table, model_input, message],
            api_name="ground",
        )
        show_input.change(
            lambda show: gr.Image(visible=show),
            inputs=show_input,
            outputs=model_input,
            queue=False,
            api_visibility="private",
        )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clipvg-app", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model_name_or_path",
        "--model",
        dest="model",
        help="CLIP-VG folder or Hub id (default: the model_id of space_config.json beside the app)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        help="port to serve on (default: $GRADIO_SERVER_PORT or 7860)",
    )
    parser.add_argument("--device", default=None, help="torch device for the model, e.g. cpu or cuda:0")
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "int8"),
        default="auto",
        help="number format of the model: auto = bf16 on a CPU with AMX / AVX512-BF16 or a bf16 GPU (box head "
        "fp32), else fp32 (default: auto); int8 = dynamically quantised int8 linear layers (CPU only)",
    )
    args = parser.parse_args(argv)
    if args.model is None:
        if not SPACE_CONFIG.is_file():
            parser.error("--model is required (no space_config.json beside the app)")
        args.model = json.loads(SPACE_CONFIG.read_text())["model_id"]
    is_hub_id = args.model.count("/") == 1 and not args.model.startswith((".", "/", "~"))
    if not is_hub_id and not Path(args.model).expanduser().is_dir():
        parser.error(f"--model {args.model}: no such model folder (and not a Hub id ORG/NAME)")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    return args


def serve(args: argparse.Namespace) -> None:
    """Load the model of ``args`` and serve the demo until interrupted. A model that cannot load is a
    :class:`UsageError` naming ``--model`` (shown as one line by ``clipvg-app``, :mod:`clipvg_hf.commands.app`)."""
    try:
        grounder = load_grounder(args.model, device=args.device, dtype=args.dtype)
    except (OSError, ValueError) as error:  # the loading path's errors already name --model
        message = " ".join(first_line(error).split())
        if not message.startswith("--model "):
            message = f"--model {args.model}: {message}"
        raise UsageError(message) from error
    build_demo(grounder).launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    # a Space runs this file without clipvg_hf, so without its command layer (clipvg_hf.commands.app): the same one
    # line and exit status 2 here (also for ``python -m clipvg_hf.app``)
    try:
        serve(parse_args())
    except UsageError as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        sys.exit(2)
