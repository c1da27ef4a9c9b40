"""Small helpers shared by the library: atomic files and locks, checkpoints, devices, number formatting."""
