"""The beat side: the schedule built from the configured accounts."""
