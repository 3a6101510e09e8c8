"""Data: ShapesWorld (the embedded world), user data loaders, and the mixed-modal sequence builder."""

from umm.data import shapes  # noqa: F401  (registers the "shapes" dataset)
