"""Storage backends behind the :class:`~sessionctl.backend.files.base.Backend` Protocol."""
