"""Built-in components, registered as internal plugins through the same hooks third parties use."""
__all__: list[str] = []
