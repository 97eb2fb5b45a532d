"""Lambda handlers: thin adapters from AWS events to the domain use cases."""
