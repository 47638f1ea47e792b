"""The physics velnet computes without a network: cosmology, linear theory, classical estimators, redshift space."""
