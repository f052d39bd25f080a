"""CLIP-VG visual grounding for transformers, datasets and accelerate.

Importing the package registers CLIP-VG with the transformers Auto classes, so that
``AutoModel.from_pretrained(...)`` and ``AutoModelForZeroShotObjectDetection.from_pretrained(...)`` load it.
"""

from .configuration_clipvg import CLIPVGConfig
from .configuration_hivg import HiVGConfig
from .families import register_auto_classes
from .image_processing_clipvg import CLIPVGImageProcessor
from .metrics import GROUNDING_ACCURACY_PATH
from .modeling_clipvg import CLIPVGForGrounding, CLIPVGGroundingOutput, CLIPVGPreTrainedModel
from .modeling_hivg import HiVGForGrounding, HiVGGroundingOutput, HiVGPreTrainedModel
from .pipelines import VisualGroundingPipeline, register_pipelines
from .processing_clipvg import CLIPVGProcessor, build_clip_tokenizer
from .pseudo_labels import TemplateConfig, TemplateEngine

__version__ = "0.1.0"

# every model family (clipvg_hf.families) with the Auto classes; `save_pretrained` then also writes `auto_map` and
# the flat code files, for users without this package
register_auto_classes()
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
