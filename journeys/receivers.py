"""Domain-signal receivers of the journeys app (connected in AppConfig.ready())."""
