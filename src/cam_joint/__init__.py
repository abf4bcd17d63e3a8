"""cam_joint: joint fine-grained classification and captioning with a Grad-CAM disagreement loss (ETRI 2020)."""

from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                          AutoModelForImageTextToText, AutoProcessor)

from .cam_core import cam_from_pooled_gradient, disagreement_loss, map_cosine
from .configuration_cam_joint import CamJointConfig
from .image_processing_cam_joint import CamJointImageProcessor
from .modeling_cam_joint import (CamJointForImageClassification, CamJointModel, CamJointOutput, CamJointVisionModel,
                                 CamJointVisionOutput)
from .modeling_lstm_captioner import CamJointLSTMCaptioner
from .processing_cam_joint import CamJointProcessor
from .tokenization import build_caption_tokenizer, caption_words

# In-process Auto* classes resolve without trust_remote_code once cam_joint is imported.
AutoConfig.register("cam_joint", CamJointConfig, exist_ok=True)
AutoModel.register(CamJointConfig, CamJointModel, exist_ok=True)
AutoModelForImageClassification.register(CamJointConfig, CamJointForImageClassification, exist_ok=True)
AutoModelForImageTextToText.register(CamJointConfig, CamJointModel, exist_ok=True)
AutoImageProcessor.register(CamJointConfig, image_processor_classes={"pil": CamJointImageProcessor,
                                                              "torchvision": CamJointImageProcessor}, exist_ok=True)
AutoProcessor.register(CamJointConfig, CamJointProcessor, exist_ok=True)

__all__ = ["CamJointConfig", "CamJointModel", "CamJointForImageClassification", "CamJointVisionModel",
           "CamJointLSTMCaptioner", "CamJointOutput", "CamJointVisionOutput",
           "CamJointImageProcessor", "CamJointProcessor", "build_caption_tokenizer", "caption_words",
           "cam_from_pooled_gradient", "disagreement_loss", "map_cosine"]
