"""Developer scripts (demo material, README generation): in the repository, not in the wheel."""
