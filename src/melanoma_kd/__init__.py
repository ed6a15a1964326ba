"""melanoma-kd: melanoma classifiers, knowledge distillation and CPU deployment (DVC pipeline)."""

from melanoma_kd.cpu_kernels import pin_cpu_kernels
from melanoma_kd.startup import pause_for_imports

pin_cpu_kernels()
pause_for_imports()  # a stage script's imports, which follow, run without the cyclic collector

__version__ = "0.1.0"
