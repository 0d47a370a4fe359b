"""Base classes of what a plugin provides; import the submodules (``from mm_core.base.model import
BaseModel``): this package imports nothing, so that listing names stays free of torch."""
