"""Project-wide pytest fixtures and the rules for tests that need real servers (see README, "Tests")."""
