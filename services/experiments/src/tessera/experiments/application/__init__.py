"""What the experiment service does beyond definitions: exposures, conversions, results."""
