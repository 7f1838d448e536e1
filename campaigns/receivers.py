"""Domain-signal receivers of the campaigns app (connected in AppConfig.ready())."""
