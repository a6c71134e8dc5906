"""Small protocols the control loops depend on; adapters implement them."""
