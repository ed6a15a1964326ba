"""melanoma-kd: melanoma classifiers, knowledge distillation and CPU deployment (DVC pipeline)."""

__version__ = "0.1.0"
