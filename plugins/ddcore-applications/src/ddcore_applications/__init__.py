"""Applications of a distilled set as ddcore evaluators: ``continual`` (GDumb memory) and ``nas_proxy``."""
