"""The usage snippets proposed for README.md, executed by tests (paths are replaced by the fixture's)."""

PROCESSOR_AND_MODEL = """
import torch
from PIL import Image
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

import clipvg_hf  # registers CLIP-VG with the transformers Auto classes

model = AutoModelForZeroShotObjectDetection.from_pretrained("path/to/clipvg-model").eval()
processor = AutoProcessor.from_pretrained("path/to/clipvg-model")

image = Image.open("photo.jpg")
texts = ["woman holding a pink umbrella", "the umbrella"]  # one box per expression
inputs = processor(images=image, text=texts, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
results = processor.post_process_grounded_object_detection(
    outputs, target_sizes=[(image.height, image.width)] * len(texts), text_labels=texts
)
for result in results:
    print(result["text_labels"][0], result["boxes"][0].tolist())  # (x1, y1, x2, y2) in image pixels
"""

VISUAL_GROUNDING_PIPELINE = """
from transformers import pipeline

import clipvg_hf  # registers the "visual-grounding" task

grounder = pipeline("visual-grounding", model="path/to/clipvg-model")
for result in grounder("photo.jpg", text=["woman holding a pink umbrella", "the umbrella"]):
    print(result["label"], result["box"])
"""

CLI = """
python -m clipvg_hf.predict --model path/to/clipvg-model --image photo.jpg \\
    --text "woman holding a pink umbrella" --text "the umbrella" --output boxes.png
"""
