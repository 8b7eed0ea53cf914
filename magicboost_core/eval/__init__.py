"""eval room of the Magic-Boost engine."""
