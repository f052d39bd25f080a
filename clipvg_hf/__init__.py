"""CLIP-VG visual grounding for transformers, datasets and accelerate.

Importing the package registers CLIP-VG with the transformers Auto classes, so that
``AutoModel.from_pretrained(...)`` and ``AutoModelForZeroShotObjectDetection.from_pretrained(...)`` load it.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForZeroShotObjectDetection, AutoProcessor

from .configuration_clipvg import CLIPVGConfig
from .configuration_hivg import HiVGConfig
from .image_processing_clipvg import CLIPVGImageProcessor
from .metrics import GROUNDING_ACCURACY_PATH
from .modeling_clipvg import CLIPVGForGrounding, CLIPVGGroundingOutput, CLIPVGPreTrainedModel
from .modeling_hivg import HiVGForGrounding, HiVGGroundingOutput, HiVGPreTrainedModel
from .pipelines import VisualGroundingPipeline, register_pipelines
from .processing_clipvg import CLIPVGProcessor, build_clip_tokenizer
from .pseudo_labels import TemplateConfig, TemplateEngine

__version__ = "0.1.0"

AutoConfig.register(CLIPVGConfig.model_type, CLIPVGConfig, exist_ok=True)
AutoModel.register(CLIPVGConfig, CLIPVGForGrounding, exist_ok=True)
AutoModelForZeroShotObjectDetection.register(CLIPVGConfig, CLIPVGForGrounding, exist_ok=True)
# `save_pretrained` also writes `auto_map` and the flat code files, for users without this package.
CLIPVGConfig.register_for_auto_class()
CLIPVGForGrounding.register_for_auto_class("AutoModel")
CLIPVGImageProcessor.register_for_auto_class("AutoImageProcessor")
CLIPVGProcessor.register_for_auto_class("AutoProcessor")
AutoImageProcessor.register(CLIPVGConfig, image_processor_classes={"pil": CLIPVGImageProcessor}, exist_ok=True)
AutoProcessor.register(CLIPVGConfig, CLIPVGProcessor, exist_ok=True)
# HiVG, the second model family: the same processor, its own config and model (also saved as remote code).
AutoConfig.register(HiVGConfig.model_type, HiVGConfig, exist_ok=True)
AutoModel.register(HiVGConfig, HiVGForGrounding, exist_ok=True)
AutoModelForZeroShotObjectDetection.register(HiVGConfig, HiVGForGrounding, exist_ok=True)
HiVGConfig.register_for_auto_class()
HiVGForGrounding.register_for_auto_class("AutoModel")
AutoImageProcessor.register(HiVGConfig, image_processor_classes={"pil": CLIPVGImageProcessor}, exist_ok=True)
AutoProcessor.register(HiVGConfig, CLIPVGProcessor, exist_ok=True)
register_pipelines()

__all__ = [
    "CLIPVGConfig",
    "CLIPVGForGrounding",
    "CLIPVGGroundingOutput",
    "CLIPVGImageProcessor",
    "CLIPVGPreTrainedModel",
    "CLIPVGProcessor",
    "GROUNDING_ACCURACY_PATH",
    "HiVGConfig",
    "HiVGForGrounding",
    "HiVGGroundingOutput",
    "HiVGPreTrainedModel",
    "TemplateConfig",
    "TemplateEngine",
    "VisualGroundingPipeline",
    "build_clip_tokenizer",
]
