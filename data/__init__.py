"""The shipped data: installed as the package ``acvm_data`` (``pyproject.toml``), so that a wheel
carries the trained weights (``weights/*.pt`` and their ``MANIFEST.json``); in a checkout it is
the repository's ``data/`` folder, found beside the ``acvm`` package (``acvm.registry.WEIGHTS_DIR``)."""
