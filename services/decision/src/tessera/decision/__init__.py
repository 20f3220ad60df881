"""Decision service: campaigns and the Decide call."""
