"""The built-in network architectures (public): each module has a config class, the ``nn.Module`` and a builder."""

__all__: list[str] = []
