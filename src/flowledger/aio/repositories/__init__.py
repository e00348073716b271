"""The async repositories: the source the sync ones are generated from."""
