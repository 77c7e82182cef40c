"""A medveil plugin for the tests: what a third party writes to add a scheme, an attack and a model."""
