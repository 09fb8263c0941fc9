"""Export trained Keras models to ONNX with fervid's model card in the metadata."""
