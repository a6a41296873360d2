"""Export of trained models for deployment (tools/export_model.py).

graphs.py       what is traced: a clip model (clip in, class scores out), or CoX3D's per-frame
                step with its whole state as inputs and outputs
formats.py      ONNX (torch's dynamo exporter, checked with onnx.checker), TorchScript
                (torch.jit.trace) and torch.export programs: writing, metadata, reloading
check.py        exported outputs against the eager model's
onnx_stream.py  streaming an exported CoX3D step with ONNX Runtime and numpy alone

onnx and onnxruntime are optional (`pip install vov3d[export]`) and imported only here.
"""
