"""A backbone and a dimension method of one's own, outside the package: the registries find them by import path
(``model.name: tests.toys.backbone:Bilinear``, ``search.method: tests.toys.method:FIRST_DIMS``)."""
