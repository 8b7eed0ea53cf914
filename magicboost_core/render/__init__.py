"""render room of the Magic-Boost engine."""
