"""Where models come from: the bundled demo model, local folders, hub ids; all through `load_model`."""
