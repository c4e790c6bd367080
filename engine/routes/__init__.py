"""Routes: which accepted messages go where (filters), and how each outbound copy is rewritten."""
