"""What every native backend shares: the call layout, the status protocol, the disk cache."""
from graphc.runtime.cache import CompileCache, cache_key, default_dir
from graphc.runtime.code_hash import code_hash, source_hash
from graphc.runtime.errors import raise_for_status
from graphc.runtime.layout import Layout
from graphc.runtime.slots import SlotMap

__all__ = ["CompileCache", "Layout", "SlotMap", "cache_key", "code_hash", "default_dir",
           "raise_for_status", "source_hash"]
