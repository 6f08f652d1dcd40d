"""Configuration files: one `get_config()` per experiment."""
