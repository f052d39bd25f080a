"""Local parquet folders in the layouts of the REC datasets on the Hub (features as their cards give them, see
``../shared/docs/hub_rec_datasets.md``), filled with the parity fixture's images, boxes and expressions."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import PIL.Image

from clipvg_hf.data.splits import load_split_file

from utils.paths import COCO_IMAGES, TINY_DIR

UNC_SPLITS = TINY_DIR / "splits" / "unc"

_SENTENCE = {
    "raw": datasets.Value("string"),
    "sent": datasets.Value("string"),
    "sent_id": datasets.Value("int64"),
    "tokens": datasets.List(datasets.Value("string")),
}

#: jxu124/refcoco-benchmark (card `dataset_info`): one row per image.
BENCHMARK_FEATURES = datasets.Features(
    {
        "ref_list": datasets.List(
            {
                "ann_info": {
                    "area": datasets.Value("float64"),
                    "bbox": datasets.List(datasets.Value("float64"), length=4),
                    "category_id": datasets.Value("int64"),
                    "id": datasets.Value("int64"),
                    "image_id": datasets.Value("int64"),
                    "iscrowd": datasets.Value("int64"),
                    "segmentation": datasets.List(datasets.List(datasets.Value("float64"))),
                },
                "ref_info": {
                    "ann_id": datasets.Value("int64"),
                    "category_id": datasets.Value("int64"),
                    "file_name": datasets.Value("string"),
                    "image_id": datasets.Value("int64"),
                    "ref_id": datasets.Value("int64"),
                    "sent_ids": datasets.List(datasets.Value("int64")),
                    "sentences": datasets.List(_SENTENCE),
                    "split": datasets.Value("string"),
                },
            }
        ),
        "image_info": {
            "coco_url": datasets.Value("string"),
            "date_captured": datasets.Value("string"),
            "file_name": datasets.Value("string"),
            "flickr_url": datasets.Value("string"),
            "height": datasets.Value("int64"),
            "id": datasets.Value("int64"),
            "license": datasets.Value("int64"),
            "width": datasets.Value("int64"),
        },
        "image": datasets.Image(),
    }
)

#: jxu124/refcoco (card commit 9fba820): one row per object, no image.
JXU124_FEATURES = datasets.Features(
    {
        "sent_ids": datasets.List(datasets.Value("int64")),
        "file_name": datasets.Value("string"),
        "ann_id": datasets.Value("int64"),
        "ref_id": datasets.Value("int64"),
        "image_id": datasets.Value("int64"),
        "split": datasets.Value("string"),
        "sentences": datasets.List(_SENTENCE),
        "category_id": datasets.Value("int64"),
        "raw_anns": datasets.Value("string"),
        "raw_image_info": datasets.Value("string"),
        "raw_sentences": datasets.Value("string"),
        "image_path": datasets.Value("string"),
        "bbox": datasets.List(datasets.Value("float64"), length=4),
        "captions": datasets.List(datasets.Value("string")),
        "global_image_id": datasets.Value("string"),
        "anns_id": datasets.Value("string"),
    }
)

#: lmms-lab/RefCOCO, RefCOCOplus, RefCOCOg (card): one row per object.
LMMS_FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.List(datasets.Value("string")),
        "segmentation": datasets.List(datasets.Value("float32")),
        "bbox": datasets.List(datasets.Value("float32"), length=4),
        "iscrowd": datasets.Value("int8"),
        "file_name": datasets.Value("string"),
    }
)

#: Kangheng/refcoco* (columns read by code): one row per sentence.
KANGHENG_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "bbox": datasets.Value("string"),
        "image": datasets.Image(),
        "image_size": datasets.List(datasets.Value("int64")),
    }
)

LAYOUT_NAMES = ("jxu124/refcoco-benchmark", "jxu124/refcoco", "lmms-lab/RefCOCO", "Kangheng/refcoco")
#: The split name each layout's Hub copy gives the UNC val / testA.
SPLIT_NAMES = {
    "jxu124/refcoco-benchmark": {"val": "refcoco_unc_val", "testA": "refcoco_unc_testA"},
    "jxu124/refcoco": {"val": "validation", "testA": "test"},
    "lmms-lab/RefCOCO": {"val": "val", "testA": "testA"},
    "Kangheng/refcoco": {"val": "val", "testA": "testA"},
}


def fixture_rows(split: str) -> list[dict]:
    """The parity fixture's RefCOCO rows of one split: image, xywh box, expression, and made-up COCO-like ids."""
    rows = []
    for index, (image, _, xywh, text, _) in enumerate(load_split_file(UNC_SPLITS / f"unc_{split}.pth")):
        with PIL.Image.open(COCO_IMAGES / image) as opened:
            width, height = opened.size
        rows.append(
            {
                "image": image,
                "xywh": [float(v) for v in xywh],
                "text": text,
                "width": width,
                "height": height,
                "image_id": 1000
                + sorted({r[0] for r in load_split_file(UNC_SPLITS / f"unc_{split}.pth")}).index(image),
                "ann_id": 5000 + index,
                "ref_id": 900 + index,
                "sent_id": 70000 + index,
            }
        )
    return rows


def _sentence(row: dict) -> dict:
    return {"raw": row["text"], "sent": row["text"], "sent_id": row["sent_id"], "tokens": row["text"].split()}


def _refer_name(row: dict) -> str:
    stem, suffix = row["image"].rsplit(".", 1)
    return f"{stem}_{row['ann_id']}.{suffix}"


def _xyxy(row: dict) -> list[float]:
    x, y, w, h = row["xywh"]
    return [x, y, x + w, y + h]


def _image_cell(row: dict) -> dict:
    return {"bytes": (COCO_IMAGES / row["image"]).read_bytes(), "path": row["image"]}


def layout_table(layout: str, rows: list[dict], split: str) -> datasets.Dataset:
    """One split of ``layout`` holding ``rows`` (each row one referred object with one sentence)."""
    if layout == "jxu124/refcoco-benchmark":
        images: dict[str, list[dict]] = {}
        for row in rows:
            images.setdefault(row["image"], []).append(row)
        records = [
            {
                "ref_list": [
                    {
                        "ann_info": {
                            "area": r["xywh"][2] * r["xywh"][3],
                            "bbox": r["xywh"],
                            "category_id": 1,
                            "id": r["ann_id"],
                            "image_id": r["image_id"],
                            "iscrowd": 0,
                            "segmentation": [_xyxy(r)],
                        },
                        "ref_info": {
                            "ann_id": r["ann_id"],
                            "category_id": 1,
                            "file_name": _refer_name(r),
                            "image_id": r["image_id"],
                            "ref_id": r["ref_id"],
                            "sent_ids": [r["sent_id"]],
                            "sentences": [_sentence(r)],
                            "split": split,
                        },
                    }
                    for r in refs
                ],
                "image_info": {
                    "coco_url": "",
                    "date_captured": "",
                    "file_name": name,
                    "flickr_url": "",
                    "height": refs[0]["height"],
                    "id": refs[0]["image_id"],
                    "license": 1,
                    "width": refs[0]["width"],
                },
                "image": _image_cell(refs[0]),
            }
            for name, refs in images.items()
        ]
        return datasets.Dataset.from_list(records, features=BENCHMARK_FEATURES)
    if layout == "jxu124/refcoco":
        records = [
            {
                "sent_ids": [r["sent_id"]],
                "file_name": _refer_name(r),
                "ann_id": r["ann_id"],
                "ref_id": r["ref_id"],
                "image_id": r["image_id"],
                "split": split,
                "sentences": [_sentence(r)],
                "category_id": 1,
                "raw_anns": json.dumps({"bbox": r["xywh"], "id": r["ann_id"], "image_id": r["image_id"]}),
                "raw_image_info": json.dumps(
                    {"file_name": r["image"], "height": r["height"], "width": r["width"], "id": r["image_id"]}
                ),
                "raw_sentences": json.dumps([_sentence(r)]),
                "image_path": f"coco/train2014/{r['image']}",
                "bbox": _xyxy(r),
                "captions": [r["text"]],
                "global_image_id": f"coco.{r['image_id']}",
                "anns_id": str(r["ann_id"]),
            }
            for r in rows
        ]
        return datasets.Dataset.from_list(records, features=JXU124_FEATURES)
    if layout == "lmms-lab/RefCOCO":
        records = [
            {
                "question_id": str(r["ann_id"]),
                "image": _image_cell(r),
                "question": "Please carefully observe the area circled in the image and come up with a caption for the area.",
                "answer": [r["text"]],
                "segmentation": _xyxy(r) * 2,
                "bbox": r["xywh"],
                "iscrowd": 0,
                "file_name": _refer_name(r),
            }
            for r in rows
        ]
        return datasets.Dataset.from_list(records, features=LMMS_FEATURES)
    if layout == "Kangheng/refcoco":
        records = [
            {
                "question": r["text"],
                "bbox": json.dumps(_xyxy(r)),
                "image": _image_cell(r),
                "image_size": [r["width"], r["height"]],
            }
            for r in rows
        ]
        return datasets.Dataset.from_list(records, features=KANGHENG_FEATURES)
    raise ValueError(layout)


def write_layout_folder(folder: Path, layout: str, splits: dict[str, datasets.Dataset]) -> Path:
    """``<folder>/data/<split>-00000-of-00001.parquet`` per split, as the Hub repos store them (no card: the split
    names come from the file names, as for jxu124/refcoco)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, table in splits.items():
        table.to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    return folder


def fixture_layout_folder(folder: Path, layout: str) -> Path:
    """The fixture's UNC val and testA in ``layout``, split names as that layout's Hub copy names them."""
    names = SPLIT_NAMES[layout]
    return write_layout_folder(
        folder, layout, {names[s]: layout_table(layout, fixture_rows(s), s) for s in ("val", "testA")}
    )
