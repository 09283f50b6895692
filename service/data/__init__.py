"""Data helpers: the synthetic-scene generator (``service.data.synthetic``)."""
