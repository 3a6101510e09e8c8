"""Data: ShapesWorld (the embedded world), user data loaders, and the mixed-modal sequence builder."""

from umm.data import folder, shapes, webdataset  # noqa: F401  (registers the datasets)
