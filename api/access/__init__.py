"""Who may call the API: hashed API keys with scopes, plate masking, per-key rate limits, the audit log."""
