"""The files we write and read back: checkpoints, model specs, loading, ONNX and safetensors export.

Every format is written and read in this package only (``tests/test_structure.py`` checks it).
"""
