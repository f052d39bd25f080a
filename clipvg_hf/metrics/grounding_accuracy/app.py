"""The metric Space's page: paste boxes as JSON, get Acc@0.5, Acc at other thresholds and mean IoU.

(evaluate's own ``launch_gradio_widget`` uses the ``gr.inputs`` API that Gradio 4 removed, hence this small page.)
"""

import json
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import evaluate  # noqa: E402
import gradio as gr  # noqa: E402

# the script by its file name: on a Space the folder is not called grounding_accuracy
metric = evaluate.load(str(Path(__file__).with_name("grounding_accuracy.py")))


def score(predictions: str, references: str, box_format: str, thresholds: str) -> dict:
    """Parse the JSON lists of boxes and the comma-separated thresholds, and compute the metric."""
    try:
        preds, refs = json.loads(predictions), json.loads(references)
        levels = [float(t) for t in thresholds.split(",") if t.strip()] or [0.5]
        return metric.compute(predictions=preds, references=refs, box_format=box_format, iou_thresholds=levels)
    except (ValueError, TypeError) as error:
        raise gr.Error(str(error)) from None


demo = gr.Interface(
    fn=score,
    inputs=[
        gr.Textbox(label="predictions (JSON list of 4-number boxes)", value="[[10, 10, 50, 50]]"),
        gr.Textbox(label="references (JSON list of 4-number boxes)", value="[[12, 10, 52, 50]]"),
        gr.Radio(["xyxy", "cxcywh"], value="xyxy", label="box format"),
        gr.Textbox(label="IoU thresholds", value="0.5, 0.75"),
    ],
    outputs=gr.JSON(label="grounding_accuracy"),
    title="Metric: grounding_accuracy",
    description=metric.info.description,
    article=Path(__file__).with_name("README.md").read_text().split("---", 2)[-1],
)

if __name__ == "__main__":
    demo.launch()
