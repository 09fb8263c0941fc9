"""Inference: ONNX Runtime, NumPy and OpenCV only (importing this never imports TensorFlow or Keras)."""
