"""Configuration: the yacs tree, loading with _BASE_ and overrides, validation."""
from vov3d.config.defaults import get_cfg
from vov3d.config.errors import ConfigError
from vov3d.config.load import load_config, parse_args
from vov3d.config.merge import merge_file, merge_overrides
from vov3d.config.validate import assert_and_infer_cfg

__all__ = ["get_cfg", "load_config", "parse_args", "ConfigError", "merge_file",
           "merge_overrides", "assert_and_infer_cfg"]
