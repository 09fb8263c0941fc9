"""Evaluation: metrics from predictions, and running a model (.keras or .onnx) over a dataset split."""
