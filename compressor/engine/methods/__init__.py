"""Compression methods, one file each: a config dataclass, pure tensor functions, and `apply(cfg, ctx)`
registered with `@register(name, Config)`. `compressor.engine.registry.load_methods()` imports every
module here (import errors propagate), so this package imports nothing itself."""
