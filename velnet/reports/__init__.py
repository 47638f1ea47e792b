"""The evaluation reports of both papers: `wu2021` (Wu et al. 2021, section 4) and `halo2024` (the
2024 halo paper, section 3), on the parts they share in `common`."""
