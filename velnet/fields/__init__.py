"""Fields of a box: the HDF5 fields file (`field`) and CIC painting of particles (`painting`)."""
