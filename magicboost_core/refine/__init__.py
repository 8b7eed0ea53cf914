"""refine room of the Magic-Boost engine."""
