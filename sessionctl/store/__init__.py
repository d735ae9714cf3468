"""Storage backends behind the :class:`~sessionctl.store.base.Backend` Protocol."""
