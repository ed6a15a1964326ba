"""melanoma-kd: melanoma classifiers, knowledge distillation and CPU deployment (DVC pipeline)."""

from melanoma_kd.cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()

__version__ = "0.1.0"
