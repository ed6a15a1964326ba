"""Deployment of the trained classifiers, one module per concern.

- :mod:`~melanoma_kd.deploy.onnx_model`: the exported file's metadata and the ONNX Runtime
  classifier that ``predict``, the evaluation and the benchmark run;
- :mod:`~melanoma_kd.deploy.export`: checkpoint -> ONNX with a PyTorch parity check;
- :mod:`~melanoma_kd.deploy.quantize`: static QDQ (deployed) and dynamic INT8 models;
- :mod:`~melanoma_kd.deploy.benchmark`: CPU latency of every model x runtime;
- :mod:`~melanoma_kd.deploy.tables`: the deployment table and latency plot (no torch).

The KD point to export is chosen in :mod:`melanoma_kd.selection` (``select_student`` stage).
"""
