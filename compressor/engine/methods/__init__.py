"""Compression methods, one file each. `compressor.registry.load_methods()` imports every module here
(import errors propagate); a method registers itself with `@register(name, Config, ...)`."""
from compressor.engine.methods import kv  # noqa: F401  (KV-cache stages: kivi, gear, streaming)
