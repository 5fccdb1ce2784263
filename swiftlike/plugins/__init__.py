"""Built-in plugins (the catalog, tuners, hubs) and plugin-pack management."""
