"""audistill train: USAD / USAD 2.0 students distilled from a feature bank, no teacher loaded.

Entry points: ``config.load_config(path, overrides)`` -> ``loop.train(cfg)``;
``export.export(ckpt, out)`` / ``export.load_student(path)`` / ``export.random_student(size)``;
``export.upscale(xlarge, out)`` (depth up-scaling); ``sizes.SIZES``.
"""
