"""mtl_core."""
