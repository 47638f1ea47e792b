"""The networks: the U-nets of both papers, their builders and physical-unit wrappers, and the losses."""
