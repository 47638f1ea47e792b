"""Statistics of predicted fields against the truth: power spectra, per-cell statistics, correlation functions."""
