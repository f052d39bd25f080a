"""Low-precision inference (``--dtype auto|fp32|bf16``): the flag reaches the model, bf16 boxes agree with fp32
within a tolerance derived from bf16's precision, the dtype is recorded, bad values are one-line errors.

Tolerance. bf16 keeps 8 significant bits: eps = 2^-8, relative. Every layer on the path to the [REG] token rounds
its inputs and its output to bf16 (the products accumulate in fp32), a relative error of order eps per layer; over D
layers, independent roundings add up like a random walk, sqrt(D) * eps relative on the [REG] feature. The box head
runs in fp32 and ends in a sigmoid, whose slope is at most 1/4, so a box coordinate moves by at most about
sqrt(D) * eps / 4 (taking the head's gain times the logit's size as about 1). The fixture model has D = 12 vision +
3 text + 2 fusion layers = 17: tolerance sqrt(17) / 2^8 / 4 = 4.0e-3. Measured on the four fixture splits: max
|Δbox| 3.8e-4 (ten times inside it), and no Acc@0.5 hit flips (no fp32 IoU lies within 2e-2 of 0.5).
"""

import json
import math

import pytest
import torch
from accelerate import Accelerator

from clipvg_hf import precision
from clipvg_hf.commands import evaluate
from clipvg_hf.configuration_clipvg import CLIPVGConfig
from clipvg_hf.errors import UsageError
from clipvg_hf.evaluation import loop

BF16_EPS = 2.0**-8
CONFIG = "refcoco-unsup-single"


def box_tolerance(config: CLIPVGConfig) -> float:
    """sqrt(D) * eps / 4 for the D transformer layers on the path to the box (see the module docstring)."""
    depth = max(config.extract_layers) + 1 + config.text_config.num_hidden_layers + config.fusion_num_layers
    return math.sqrt(depth) * BF16_EPS / 4


@pytest.fixture
def spies(monkeypatch):
    """Record the models evaluate loads and the boxes it gathers."""
    seen = {"models": [], "boxes": []}
    load, gather = loop.load_model_and_processor, loop.gather_predictions

    def load_spy(*args, **kwargs):
        model, processor = load(*args, **kwargs)
        seen["models"].append(model)
        seen["boxes"].append([])
        return model, processor

    def gather_spy(*args, **kwargs):
        for boxes, labels, rows in gather(*args, **kwargs):
            seen["boxes"][-1].append((boxes, labels, rows))
            yield boxes, labels, rows

    monkeypatch.setattr(loop, "load_model_and_processor", load_spy)
    monkeypatch.setattr(loop, "gather_predictions", gather_spy)
    return seen


def test_evaluate_bf16_reaches_the_model_agrees_with_fp32_and_is_recorded(
    spies, converted_dir, fixture_dataset, tmp_path
):
    base = ["--model_name_or_path", str(converted_dir), "--dataset", str(fixture_dataset)]
    base += ["--dataset_config", CONFIG, "--split", "testA", "--batch_size", "8", "--cpu"]
    results = {}
    for dtype in ("fp32", "bf16"):
        output = tmp_path / f"{dtype}.json"
        assert evaluate.main([*base, "--dtype", dtype, "--output", str(output)]) == 0
        results[dtype] = json.loads(output.read_text())
    exact, low = spies["models"]
    assert {p.dtype for p in exact.parameters()} == {torch.float32}
    for name, param in low.named_parameters():  # weights bf16 once, the box head fp32 and never rounded
        assert param.dtype == (torch.float32 if name.startswith("box_head.") else torch.bfloat16), name
    for (name, a), b in zip(exact.box_head.named_parameters(), low.box_head.parameters(), strict=True):
        assert torch.equal(a, b), name

    assert results["fp32"]["dtype"] == "float32" and results["bf16"]["dtype"] == "bfloat16"
    for record in results.values():
        assert record["hardware"]["device"] == "cpu"
        assert set(record["hardware"]["cpu"]) == {"cpu", "isa", "bf16_units", "threads"}

    (fp32_boxes, labels, rows), (bf16_boxes, _, bf16_rows) = (
        tuple(torch.cat(part) for part in zip(*batches, strict=True)) for batches in spies["boxes"]
    )
    assert torch.equal(rows, bf16_rows) and bf16_boxes.dtype == torch.float32  # boxes come out of the fp32 head
    tolerance = box_tolerance(exact.config)
    assert tolerance == pytest.approx(4.0e-3, rel=0.05)
    assert (bf16_boxes - fp32_boxes).abs().max() <= tolerance
    # Acc@0.5: a hit may flip only where the fp32 IoU lies within the tolerance of 0.5 (none on the fixture)
    assert results["bf16"]["splits"]["testA"]["accuracy"] == results["fp32"]["splits"]["testA"]["accuracy"]


@pytest.mark.parametrize(
    "main_name",
    [
        "clipvg_hf.commands.evaluate",
        "clipvg_hf.commands.predict",
        "clipvg_hf.curriculum.score",
        "clipvg_hf.commands.app",
    ],
)
def test_bad_dtype_is_a_one_line_error_with_exit_status_2(main_name, capsys, tmp_path):
    import importlib

    main = importlib.import_module(main_name).main
    argv = ["--model_name_or_path", str(tmp_path), "--dtype", "fp16"]
    argv += {
        "clipvg_hf.commands.evaluate": ["--dataset", "d", "--split", "val"],
        "clipvg_hf.commands.predict": ["--image", "x.jpg", "--text", "a"],
        "clipvg_hf.curriculum.score": ["--dataset", "d", "--output_dir", str(tmp_path / "out")],
        "clipvg_hf.commands.app": [],
    }[main_name]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert "error: argument --dtype" in err[-1] and "fp16" in err[-1], err[-1]
    assert not (tmp_path / "out").exists()


def test_auto_picks_bf16_only_with_bf16_units_and_bf16_without_them_says_it_is_slow(monkeypatch, capsys):
    summary = {"cpu": "test CPU", "isa": "AVX2", "bf16_units": [], "threads": 2}
    monkeypatch.setattr(precision, "cpu_summary", lambda: summary)
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert capsys.readouterr().err == ""
    assert precision.resolve_dtype("bf16", "cpu") == torch.bfloat16
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "no AMX or AVX512-BF16" in note[0] and "slower" in note[0]
    assert precision.resolve_dtype("fp32", "cpu") == torch.float32 and precision.resolve_dtype(None) == torch.float32

    summary["bf16_units"] = ["AMX", "AVX512-BF16"]
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert "AMX/AVX512-BF16 found" in capsys.readouterr().err
    assert precision.resolve_dtype("bf16", "cpu", note=True) == torch.bfloat16
    assert capsys.readouterr().err == ""  # bf16 on a CPU with bf16 units: nothing to warn about
    with pytest.raises(UsageError, match=r"^--dtype must be one of auto, fp32, bf16, int8, got .int4."):
        precision.resolve_dtype("int4")
    assert precision.cpu_summary_line() == "CPU: test CPU; ISA AVX2; bf16 units: AMX, AVX512-BF16; 2 threads"


def test_pipeline_with_torch_dtype_bf16(converted_dir):
    import PIL.Image
    from transformers import pipeline

    from clipvg_hf.loading import load_model_and_processor

    from utils.paths import COCO_IMAGES

    image = str(sorted(COCO_IMAGES.glob("*.jpg"))[0])
    longest = max(PIL.Image.open(image).size)
    texts = ["the man on the left", "the umbrella"]
    exact = pipeline("visual-grounding", model=str(converted_dir))
    from_path = pipeline("visual-grounding", model=str(converted_dir), torch_dtype=torch.bfloat16)
    model, processor = load_model_and_processor(converted_dir)
    from_object = pipeline("visual-grounding", model=model, processor=processor, dtype=torch.bfloat16)
    want = exact(image, text=texts)
    tolerance = box_tolerance(exact.model.config) * longest  # canvas units -> pixels of the image's longest side
    for grounder in (from_path, from_object):
        assert grounder.model.dtype == torch.bfloat16
        assert grounder.model.box_head.layers[0].weight.dtype == torch.float32
        got = grounder(image, text=texts)
        for a, b in zip(got, want, strict=True):
            assert a["label"] == b["label"]
            for key in ("xmin", "ymin", "xmax", "ymax"):
                assert abs(a["box"][key] - b["box"][key]) <= tolerance, (key, a["box"], b["box"])


def test_scores_and_results_and_card_record_the_dtype(fixture_dataset, tmp_path):
    from clipvg_hf.curriculum.reliability import load_scores, save_scores, score_model
    from clipvg_hf.evaluation import load_results, write_results
    from clipvg_hf.hub.cards import build_model_card
    from clipvg_hf.modeling_clipvg import CLIPVGForGrounding

    from conftest import make_tiny_config

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    text.update(max_position_embeddings=77, projection_dim=24, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    torch.manual_seed(0)
    folder = tmp_path / "tiny"  # a random tiny model that reads the real tokenizer's ids
    CLIPVGForGrounding(make_tiny_config(text_config=text, max_text_length=77)).save_pretrained(folder)
    scores = score_model(
        folder, fixture_dataset, CONFIG, "testA", accelerator=Accelerator(cpu=True), batch_size=8, dtype="bf16"
    )
    assert scores.measurer["dtype"] == "bfloat16" and scores.measurer["hardware"]["device"] == "cpu"
    save_scores(scores, tmp_path / "scores", plot=False)
    assert load_scores(tmp_path / "scores").measurer["dtype"] == "bfloat16"
    report = json.loads((tmp_path / "scores" / "reliability.json").read_text())
    assert report["measurer"]["hardware"]["cpu"]["bf16_units"] == precision.bf16_units()

    results = {
        "model": {"path": str(folder), "weights_sha256": "0" * 64, "config_sha256": "1" * 64},
        "dataset": {"name": "org/data", "config": CONFIG},
        "metric": "Acc@0.5",
        "splits": {"testA": {"accuracy": 0.5, "mean_iou": 0.4, "num_samples": 6}},
        "dtype": "bfloat16",
        "hardware": precision.hardware_record("cpu"),
    }
    write_results(results, tmp_path / "results.json")
    loaded = load_results(tmp_path / "results.json")
    assert loaded["dtype"] == "bfloat16" and loaded["hardware"] == results["hardware"]
    config = json.loads((folder / "config.json").read_text())
    card = str(build_model_card("org/model", config, None, loaded, dataset_id="org/data"))
    assert "The model ran in bfloat16 (weights held in bfloat16, box head in float32" in card
    card = str(build_model_card("org/model", config, None, {**loaded, "dtype": "float32"}, dataset_id="org/data"))
    assert "The model ran in float32 (the exact path) on cpu" in card


# int8 (``--dtype int8``, CPU only): torch.ao's dynamically quantised linears, the box head fp32.
#
# Tolerance. A dynamically quantised linear rounds its weights to 255 levels per tensor (step max|w| / 127) and its
# input to 256 levels over the row range seen in the call: half a step of each is about 2^-8 of the largest value,
# and the two add to a relative error of order eps = 2^-7 per linear layer, twice bf16's. Over the D transformer
# layers on the path to the [REG] token these add like a random walk (sqrt(D) * eps), and the fp32 box head's sigmoid
# (slope <= 1/4) takes a box coordinate at most sqrt(D) * eps / 4 away, as for bf16 above. The tiny model has
# D = 4 vision (extract layers up to 3) + 2 text + 2 fusion layers = 8: tolerance sqrt(8) / 2^7 / 4 = 5.5e-3.
# Measured on 6 random inputs with seed 0: max |Δbox| 1.1e-3 (five times inside it).
INT8_EPS = 2.0**-7


def int8_box_tolerance(config: CLIPVGConfig) -> float:
    """sqrt(D) * eps_int8 / 4 (see the comment above)."""
    return box_tolerance(config) * INT8_EPS / BF16_EPS


def test_int8_quantises_the_linears_but_the_box_head_and_its_boxes_stay_close_to_fp32():
    import copy

    from torch import nn
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from clipvg_hf.modeling_clipvg import CLIPVGForGrounding

    from conftest import make_tiny_config

    torch.manual_seed(0)
    exact = CLIPVGForGrounding(make_tiny_config()).eval()
    low = copy.deepcopy(exact).to_inference_dtype(precision.resolve_dtype("int8", "cpu"))
    assert isinstance(low.fusion.layers[0].fc1, DynamicInt8Linear) and isinstance(low.visual_proj, DynamicInt8Linear)
    assert all(type(layer) is nn.Linear for layer in low.box_head.layers)
    for (name, a), b in zip(exact.box_head.named_parameters(), low.box_head.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b), name
    assert low.dtype == torch.float32 and precision.dtype_name(torch.qint8) == "int8"

    config = exact.config
    pixels = torch.randn(6, 3, config.image_size, config.image_size)
    ids = torch.randint(1, config.text_config.vocab_size, (6, 7))
    with torch.no_grad():
        want = exact(pixel_values=pixels, input_ids=ids).pred_boxes
        got = low(pixel_values=pixels, input_ids=ids).pred_boxes
    tolerance = int8_box_tolerance(config)
    assert tolerance == pytest.approx(5.5e-3, rel=0.05)
    assert got.dtype == torch.float32 and 0 < (got - want).abs().max() <= tolerance


def test_evaluate_int8_records_int8_in_the_results_and_the_card(converted_dir, fixture_dataset, tmp_path):
    from clipvg_hf.evaluation import load_results
    from clipvg_hf.hub.cards import build_model_card

    output = tmp_path / "int8.json"
    argv = ["--model_name_or_path", str(converted_dir), "--dataset", str(fixture_dataset), "--dataset_config", CONFIG]
    argv += ["--split", "testA", "--batch_size", "8", "--cpu", "--dtype", "int8", "--output", str(output)]
    assert evaluate.main(argv) == 0
    results = json.loads(output.read_text())
    assert results["dtype"] == "int8" and results["hardware"]["device"] == "cpu"
    loaded = load_results(output)
    assert loaded["dtype"] == "int8"
    config = json.loads((converted_dir / "config.json").read_text())
    card = str(build_model_card("org/model", config, None, loaded, dataset_id="org/data"))
    assert "The model ran in int8 (linear layers dynamically quantised to int8" in card


def test_int8_on_a_cuda_device_is_one_error_line_with_exit_status_2(monkeypatch, capsys):
    from clipvg_hf.commands import predict

    from utils.paths import COCO_IMAGES

    with pytest.raises(UsageError, match=r"^--dtype int8 runs on the CPU only"):
        precision.resolve_dtype("int8", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU as far as the device check can tell
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    image = str(sorted(COCO_IMAGES.glob("*.jpg"))[0])
    argv = ["--model_name_or_path", "unused", "--image", image, "--text", "a", "--device", "cuda", "--dtype", "int8"]
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: --dtype int8 runs on the CPU only"), err
