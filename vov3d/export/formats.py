"""Writing and reloading the three export formats.

* onnx: torch's default (dynamo) exporter, one self-contained file (no external weights),
  checked with onnx.checker; the metadata is the model's metadata property "vov3d" (JSON,
  with the opset and torch version). The legacy TorchScript-based exporter is not used: it
  is deprecated and cannot export VoV3D ("convolution for kernel of unknown shape").
* torchscript: torch.jit.trace, metadata in the archive's extra file "vov3d.json".
* exported: a torch.export program (torch.export.save), metadata in "vov3d.json".

A file is written under a temporary name in the target folder and renamed when complete,
so a failed export leaves any previous file as it was. Reloading needs none of vov3d's
model code: `load_runner` returns a function from input arrays to output arrays.
"""
import contextlib
import json
import logging
import os
import tempfile
import warnings
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

from vov3d.export.graphs import ExportGraph
from vov3d.utils.errors import UserError

FORMATS = ("onnx", "torchscript", "exported")
EXTRA_FILE = "vov3d.json"
ONNX_KEY = "vov3d"


class MissingExtraError(UserError):
    """An optional dependency of the export path is not installed."""


def require_onnx() -> None:
    """onnx and onnxruntime, or one line naming the extra that installs them."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"ONNX export needs the package(s) {', '.join(missing)}, not installed here: "
                                "pip install 'vov3d[export]' (or pip install -e '.[export]' in a checkout).")


def _dynamic_shapes(graph: ExportGraph):
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = [{0: batch} if batched else None for batched in graph.batched_inputs]
    # forward(x) takes one tensor; StreamStep.forward(frame, *state) a tensor and a tuple.
    return (dims[0],) if len(dims) == 1 else (dims[0], tuple(dims[1:]))


def _write_replacing(path: str, write: Callable[[str], None]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """The exporter logs a warning per torchvision operator it cannot register (vov3d needs
    none of them) and warns about its own internals; neither concerns the user."""
    exporter = logging.getLogger("torch.onnx")
    level = exporter.level
    exporter.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter.setLevel(level)


def _export_onnx(graph: ExportGraph, path: str, dynamic: bool) -> Dict:
    import onnx

    with torch.no_grad(), _quiet_onnx_exporter():
        program = torch.onnx.export(graph.module, graph.example, None, dynamo=True,
                                    input_names=graph.input_names, output_names=graph.output_names,
                                    dynamic_shapes=_dynamic_shapes(graph) if dynamic else None,
                                    optimize=True, verbose=False)
    proto = program.model_proto
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    metadata = dict(graph.metadata, opset=opset, format="onnx")
    del proto.metadata_props[:]
    proto.metadata_props.add(key=ONNX_KEY, value=json.dumps(metadata))
    proto.doc_string = f"vov3d {metadata['model_name']} ({graph.mode}), exported with torch {torch.__version__}"
    onnx.checker.check_model(proto, full_check=True)
    _write_replacing(path, lambda tmp: onnx.save_model(proto, tmp))
    return metadata


def _export_torchscript(graph: ExportGraph, path: str, dynamic: bool) -> Dict:
    metadata = dict(graph.metadata, format="torchscript")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values made constants
        traced = torch.jit.trace(graph.module, graph.example, check_trace=False)
    _write_replacing(path, lambda tmp: torch.jit.save(traced, tmp,
                                                       _extra_files={EXTRA_FILE: json.dumps(metadata)}))
    return metadata


def _export_program(graph: ExportGraph, path: str, dynamic: bool) -> Dict:
    metadata = dict(graph.metadata, format="exported")
    with torch.no_grad():
        program = torch.export.export(graph.module, graph.example,
                                      dynamic_shapes=_dynamic_shapes(graph) if dynamic else None)
    _write_replacing(path, lambda tmp: torch.export.save(program, tmp,
                                                          extra_files={EXTRA_FILE: json.dumps(metadata)}))
    return metadata


_WRITERS = {"onnx": _export_onnx, "torchscript": _export_torchscript, "exported": _export_program}


def export_graph(graph: ExportGraph, path: str, fmt: str, dynamic_batch: bool) -> Dict:
    """Write `graph` to `path` in `fmt`; returns the metadata stored with it."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}.")
    if fmt == "onnx":
        require_onnx()
    return _WRITERS[fmt](graph, path, dynamic_batch)


Runner = Callable[[Sequence[np.ndarray]], List[np.ndarray]]


def load_runner(path: str, fmt: str, threads: int = 1) -> Runner:
    """A function running the exported file: input arrays in the graph's order -> outputs."""
    if fmt == "onnx":
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda inputs: session.run(None, dict(zip(names, [np.asarray(x) for x in inputs])))
    if fmt == "torchscript":
        module = torch.jit.load(path, map_location="cpu")
    elif fmt == "exported":
        module = torch.export.load(path).module()
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}.")

    def run(inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.asarray(x)) for x in inputs])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in out]

    return run


def read_metadata(path: str, fmt: str) -> Dict:
    """The metadata written with an exported file."""
    if fmt == "onnx":
        require_onnx()
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        return json.loads(props[ONNX_KEY])
    extra = {EXTRA_FILE: ""}
    if fmt == "torchscript":
        torch.jit.load(path, map_location="cpu", _extra_files=extra)
    else:
        torch.export.load(path, extra_files=extra)
    return json.loads(extra[EXTRA_FILE])
