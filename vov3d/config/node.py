"""The config node type: yacs' CfgNode whose own merge methods use vov3d's checked merging.

Code written for PySlowFast calls `cfg.merge_from_file(path)` and `cfg.merge_from_list(opts)`
directly; with this class those calls also understand `_BASE_`, coerce like the command
line and report unknown keys and wrong types with the same messages.
"""
from yacs.config import CfgNode as _YacsCfgNode

from vov3d.config.merge import merge_file, merge_overrides


class CfgNode(_YacsCfgNode):
    def merge_from_file(self, cfg_filename: str) -> None:
        merge_file(self, cfg_filename)

    def merge_from_list(self, cfg_list) -> None:
        merge_overrides(self, cfg_list)
