"""Writing small config files and the argparse namespace load_config takes."""
import argparse
import textwrap


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def args_for(cfg_file, opts=(), num_shards=1, shard_id=0):
    return argparse.Namespace(cfg_file=cfg_file, opts=list(opts), num_shards=num_shards,
                              shard_id=shard_id, init_method="tcp://localhost:9999")


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
