"""Profile service: identities, traits, events, hot session and features."""
