"""train room of the Magic-Boost engine."""
