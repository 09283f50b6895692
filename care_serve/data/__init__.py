"""Data helpers: the synthetic-scene generator (``care_serve.data.synthetic``)."""
