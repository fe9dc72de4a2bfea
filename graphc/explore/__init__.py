"""An explorer page: one self-contained HTML file showing a compiled function's graph,
optimizer report, kernels and generated code (gc.explore)."""
from graphc.explore.page import explore, explorer_html

__all__ = ["explore", "explorer_html"]
