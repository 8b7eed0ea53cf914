"""model room of the Magic-Boost engine."""
