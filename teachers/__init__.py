"""2D teachers: models that map a batch of images to dense feature maps.

``teachers.registry.build_teacher(name, **options)`` builds one of ``TEACHERS`` ("dino", "ldm",
"daisy", "oracle"); every teacher is called as ``teacher(TeacherInput) -> (B, h, w, C) float32``
and identified by ``teacher.identity()`` (see ``teachers.base``). Heavy libraries (torch, timm,
diffusers) are imported only by the teachers that need them.
"""
