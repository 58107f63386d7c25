"""Policy backends: one interface (base.py), torch and ONNX Runtime implementations."""
