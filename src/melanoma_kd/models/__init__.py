"""Model construction (timm, by name), checkpoints and ONNX export."""
